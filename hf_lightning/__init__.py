"""hf_lightning: the Hugging Face Trainer feature set on PyTorch Lightning."""

from hf_lightning.data import HFDataModule
from hf_lightning.modules import HFModule

__all__ = ["HFDataModule", "HFModule"]
__version__ = "0.1.0"
