"""What the labels say (hf_lightning/data/labels.py): string labels become ids, in sorted order."""

from __future__ import annotations

import datasets

from hf_lightning.data import HFDataModule


def test_string_labels_are_mapped_to_ids():
    ds = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": ["pos", "neg", "pos"]})
    dm = HFDataModule(dataset=ds, tokenizer="minilm", validation_size=0, test_size=0)
    assert dm.id2label == {0: "neg", 1: "pos"} and dm.num_labels == 2
    dm.setup("fit")
    assert dm.split("train")["labels"] == [1, 0, 1]
