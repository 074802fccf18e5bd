"""What the tests of hf_lightning.args, hf_lightning._args_table and hf_lightning.settings share: transformers' field
names, the values of the fields that need the Hub, and a working folder of its own for each test."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch
import transformers

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

HF_FIELDS = [f.name for f in dataclasses.fields(transformers.TrainingArguments)]
SEQ2SEQ_FIELDS = [f.name for f in dataclasses.fields(transformers.Seq2SeqTrainingArguments) if f.name not in HF_FIELDS]
#: hf_lightning's own TrainingArguments fields (after transformers' ones, in this order) and their defaults
OWN_DEFAULTS = {"logging_dir": None, "torch_compile_scope": "model"}
OWN_FIELDS = list(OWN_DEFAULTS)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # transformers.Trainer creates output folders relative to the working directory


UNSUPPORTED_VALUES = {  # only what needs the Hugging Face Hub
    "trackio_space_id": "me/space", "trackio_bucket_id": "b", "trackio_static_space_id": False, "push_to_hub": True,
}
