"""LightningModules, one task per file."""

from hf_lightning.modules.base import HFModule
from hf_lightning.modules.tasks import TASKS

__all__ = ["HFModule", "TASKS"]
