"""Data: the datamodule, HF-order samplers, collators and the packaged data sets.

The task data modules are imported on first use (``from hf_lightning.data import Seq2SeqDataModule``).
"""

from __future__ import annotations

import importlib
from typing import Any

from hf_lightning.data.builtin import DATASETS, MODELS, MissingAssetError, load_builtin, resolve_model_path
from hf_lightning.data.collators import COLLATORS, build_collator
from hf_lightning.data.datamodule import HFDataModule
from hf_lightning.data.loader import HFBatchSampler, HFRandomSampler, TrainLoader

_LAZY = {
    "LanguageModelingDataModule": "hf_lightning.data.tasks",
    "Seq2SeqDataModule": "hf_lightning.data.tasks",
    "TokenClassificationDataModule": "hf_lightning.data.tasks",
}

__all__ = [
    "COLLATORS",
    "DATASETS",
    "MODELS",
    "HFBatchSampler",
    "HFDataModule",
    "HFRandomSampler",
    "LanguageModelingDataModule",
    "MissingAssetError",
    "Seq2SeqDataModule",
    "TokenClassificationDataModule",
    "TrainLoader",
    "build_collator",
    "load_builtin",
    "resolve_model_path",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hf_lightning.data' has no attribute '{name}'")
