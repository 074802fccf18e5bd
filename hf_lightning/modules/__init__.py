"""LightningModules, one task per file.

The task modules are imported on first use (``from hf_lightning.modules import Seq2SeqModule``), so that
``import hf_lightning`` stays as quick as the plain fine-tuning path needs.
"""

from __future__ import annotations

import importlib
from typing import Any

from hf_lightning.modules.base import HFModule
from hf_lightning.modules.tasks import TASKS

_LAZY = {
    "AdversarialModule": "hf_lightning.modules.adversarial",
    "DistillationModule": "hf_lightning.modules.distillation",
    "LanguageModelingModule": "hf_lightning.modules.language_modeling",
    "Seq2SeqModule": "hf_lightning.modules.seq2seq",
    "TokenClassificationModule": "hf_lightning.modules.token_classification",
    "LLRDModule": "hf_lightning.optim.groups",
    "LoraModule": "hf_lightning.peft",
}

__all__ = [
    "TASKS", "AdversarialModule", "DistillationModule", "HFModule", "LLRDModule", "LanguageModelingModule",
    "LoraModule", "Seq2SeqModule", "TokenClassificationModule",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hf_lightning.modules' has no attribute '{name}'")
