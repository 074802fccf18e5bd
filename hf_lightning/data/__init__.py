"""Data: the datamodule, HF-order samplers, collators and the packaged data sets."""

from hf_lightning.data.builtin import DATASETS, MODELS, MissingAssetError, load_builtin, resolve_model_path
from hf_lightning.data.collators import COLLATORS, build_collator
from hf_lightning.data.datamodule import HFDataModule
from hf_lightning.data.loader import HFBatchSampler, HFRandomSampler, TrainLoader

__all__ = [
    "COLLATORS", "DATASETS", "MODELS", "HFBatchSampler", "HFDataModule", "HFRandomSampler", "MissingAssetError",
    "TrainLoader", "build_collator", "load_builtin", "resolve_model_path",
]
