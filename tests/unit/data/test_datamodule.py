"""HFDataModule (hf_lightning/data/datamodule.py): tokenising, dynamic padding, column errors, several processes,
the grouped loader settings (flat keywords still accepted), a torch data set's unused keys."""

from __future__ import annotations

import warnings

import datasets
import lightning as L
import pytest

from hf_lightning import HFModule
from hf_lightning.data import HFDataModule
from hf_lightning.data.loader import split_window
from hf_lightning.settings import LoaderSettings
from tests.helpers.tiny import RegressionDataset, StrictRegressionModel


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
    # no text_column given and no 'text' column: the columns and the fix, before any batch is built
    dm = HFDataModule(dataset=ds, tokenizer="minilm", validation_size=0, test_size=0)
    with pytest.raises(ValueError, match=r"no 'text' column to tokenise.*\['sentence', 'label'\].*data\.text_column"):
        dm.setup("fit")


def test_an_evaluation_schedule_without_a_validation_split_is_refused_before_training(tmp_path):
    """HFFlow's eval_strategy over data without the validation split it names would evaluate nothing (as
    transformers refuses eval_strategy without an eval_dataset): refused before the first step, naming the splits
    the data has and the settings to change."""
    from hf_lightning.callbacks import HFFlow
    from tests.helpers.tiny import TINY_BERT

    rows = {"text": ["a b", "c d"] * 4, "label": [0, 1] * 4}
    data = HFDataModule(dataset=datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                                                      "dev": datasets.Dataset.from_dict(rows)}),
                        tokenizer="minilm", batch_size=4, validation_size=0, test_size=0)
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=str(tmp_path), callbacks=[HFFlow(eval_strategy="steps", eval_steps=1)])
    with pytest.raises(ValueError, match=r"no split named 'validation' \(data.validation_split\).*"
                                         r"\['dev', 'train'\].*or eval_strategy to 'no'"):
        trainer.fit(HFModule(model=dict(TINY_BERT), tokenizer="minilm", num_labels=2), data)
    assert trainer.global_step == 0


def test_empty_training_data_and_sample_limits_below_one_are_refused(tmp_path):
    """A training split without examples (transformers fails in its sampler, "num_samples=0") and a
    max_train_samples / max_eval_samples below 1 are refused with the setting named, before any step; the HF-style
    Trainer refuses an empty train_dataset at train() in the same words."""
    from hf_lightning import Trainer, TrainingArguments

    for name in ("max_train_samples", "max_eval_samples"):
        with pytest.raises(ValueError, match=rf"data.{name}=0: give a number of examples >= 1"):
            HFDataModule(dataset="movie_reviews", **{name: 0})
    empty = datasets.Dataset.from_dict({"text": [], "label": []})
    with pytest.raises(ValueError, match=r"The training data is empty \(the 'train' split has 0 examples\)"):
        HFDataModule(dataset=empty, tokenizer="minilm", validation_size=0, test_size=0).setup("fit")
    args = TrainingArguments(str(tmp_path), report_to=[], use_cpu=True, num_train_epochs=1)
    trainer = Trainer(model=StrictRegressionModel(), args=args, train_dataset=RegressionDataset(0))
    with pytest.raises(ValueError, match="The training data is empty"):
        trainer.train()
    assert trainer.state.global_step == 0


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


def test_loader_settings_and_the_flat_keywords_of_earlier_releases():
    """The DataLoader options are one group (``loader``); the flat keywords build the same data module, with a
    FutureWarning naming the new key, and the loaders follow the group (drop_last: 10 examples -> 2 full batches)."""
    ds = datasets.Dataset.from_dict({"text": [f"example {i}" for i in range(10)], "label": [i % 2 for i in range(10)]})
    common = dict(dataset=ds, tokenizer="minilm", batch_size=4, validation_size=0, test_size=0)
    with pytest.warns(FutureWarning, match=r"drop_last is now loader\.drop_last"):
        flat = HFDataModule(**common, drop_last=True, num_workers=0)
    grouped = HFDataModule(**common, loader=LoaderSettings(drop_last=True))
    assert dict(flat.hparams)["loader"] == dict(grouped.hparams)["loader"] == {**LoaderSettings().as_dict(),
                                                                               "drop_last": True}
    assert "drop_last" not in flat.hparams
    for dm in (flat, grouped):
        dm.setup("fit")
        assert [len(split_window(b)[0]["labels"]) for b in dm.train_dataloader()] == [4, 4]
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['num_worker'\]"):
        HFDataModule(**common, num_worker=2)
    with pytest.raises(ValueError, match=r"loader\.num_workers=-1"):
        LoaderSettings(num_workers=-1)


class _Indexed(RegressionDataset):
    def __getitem__(self, i: int) -> dict:
        return {**super().__getitem__(i), "idx": i}


def test_the_lightning_door_drops_the_unused_keys_of_a_torch_data_set_and_hides_lightnings_leafspec_warning():
    """A torch data set from Python: its items lose the keys the model's forward does not take before the collator
    (as transformers' RemoveColumnsCollator), and the LeafSpec deprecation that Lightning's own code triggers with a
    newer torch stays hidden, also after the warning filters were reset (hf_lightning sets it again at each run)."""
    data = HFDataModule(dataset={"train": _Indexed(8), "validation": _Indexed(4, seed=1)}, tokenize=False, batch_size=4,
                        collator="default")
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        trainer.fit(HFModule(model=StrictRegressionModel()), datamodule=data)
    assert trainer.global_step == 2 and "eval_loss" in trainer.callback_metrics
    assert not [w for w in caught if "LeafSpec" in str(w.message)]


def test_a_max_length_beyond_the_model_is_capped_with_a_warning_as_run_glue_caps_it():
    """data.max_length above the tokenizer's model_max_length would overflow the model's position embeddings at the
    first long batch: capped, with one warning naming the setting (transformers' example scripts do the same)."""
    from transformers import AutoTokenizer

    from hf_lightning.data.builtin import resolve_model_path

    limit = AutoTokenizer.from_pretrained(resolve_model_path("minilm")).model_max_length
    long = " ".join(["word"] * (limit + 50))
    ds = datasets.Dataset.from_dict({"text": [long, "short", long, "short"], "label": [0, 1, 0, 1]})
    dm = HFDataModule(dataset=ds, tokenizer="minilm", max_length=limit + 100, validation_size=0.5, test_size=0)
    with pytest.warns(UserWarning, match=rf"data.max_length={limit + 100} is longer .*model_max_length={limit}\)"
                                         rf".*Set data.max_length to {limit} or less") as caught:
        dm.setup("fit")
    assert len([w for w in caught if "data.max_length" in str(w.message)]) == 1  # once, not per split
    lengths = [len(ids) for split in dm._splits.values() for ids in split["input_ids"]]
    assert max(lengths) == limit
