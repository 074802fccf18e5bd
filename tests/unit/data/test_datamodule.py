"""HFDataModule (hf_lightning/data/datamodule.py): tokenising, dynamic padding, column errors, several processes."""

from __future__ import annotations

import datasets
import pytest

from hf_lightning.data import HFDataModule
from hf_lightning.data.loader import split_window


def test_datamodule_tokenises_pads_dynamically_and_renames_labels():
    dm = HFDataModule(dataset="movie_reviews", tokenizer="minilm", max_length=32, batch_size=4, max_train_samples=16)
    dm.setup("fit")
    batch, window = split_window(next(iter(dm.train_dataloader())))
    assert {"input_ids", "attention_mask", "labels"} <= set(batch)
    assert batch["input_ids"].shape[1] <= 32 and window.size == 1
    lengths = batch["attention_mask"].sum(1)
    assert int(lengths.max()) == batch["input_ids"].shape[1]  # padded to the longest in the batch only
    assert dm.num_labels == 2 and dm.id2label is None


def test_datamodule_errors_list_the_columns():
    ds = datasets.Dataset.from_dict({"sentence": ["a b", "c d"], "label": [0, 1]})
    dm = HFDataModule(dataset=ds, tokenizer="minilm", text_column="text", validation_size=0, test_size=0)
    with pytest.raises(ValueError, match=r"text_column='text'.*Columns: \['sentence', 'label'\]"):
        dm.setup("fit")


def test_tokenising_in_several_processes_gives_the_same_data_under_either_name():
    """preprocessing_num_workers (HF's example scripts) and dataset_num_proc (TRL's name) are one setting: datasets.map
    in 2 processes gives the rows one process gives, in the same order; two different values are refused."""
    ds = datasets.Dataset.from_dict({"text": [f"review number {i} " * (i % 7 + 1) for i in range(40)],
                                     "label": ["pos" if i % 3 else "neg" for i in range(40)]})
    splits = {}
    for name, value in (("one", None), ("preprocessing_num_workers", 2), ("dataset_num_proc", 2)):
        kwargs = {} if value is None else {name: value}
        dm = HFDataModule(dataset=ds, tokenizer="minilm", validation_size=0, test_size=0, **kwargs)
        assert dm.preprocessing_num_workers == value
        dm.setup("fit")
        splits[name] = dm.split("train").to_dict()
    assert splits["preprocessing_num_workers"] == splits["one"] == splits["dataset_num_proc"]
    with pytest.raises(ValueError, match="dataset_num_proc=2 and data.preprocessing_num_workers=4 disagree"):
        HFDataModule(dataset=ds, preprocessing_num_workers=4, dataset_num_proc=2)
