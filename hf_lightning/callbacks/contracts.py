"""The typed contracts between the callbacks: what `HFFlow` asks of the trainer's checkpoint saver.

`HFFlow` decides *when* to save (transformers' ``DefaultFlowCallback``) and calls the saver where transformers'
``_maybe_log_save_evaluate`` saves; the saver owns *how*. `HFCheckpoint` is the implementation; a callback with these
members can stand in for it (found with ``isinstance``, never by method name).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import lightning as L

from hf_lightning.settings import CheckpointSettings


@runtime_checkable
class CheckpointSaver(Protocol):
    """What `HFFlow` needs from the callback that writes ``checkpoint-<step>`` folders.

    Attributes:
        settings: The saver's settings (save schedule, best model, output folder): `HFFlow` builds the
            ``TrainingArguments`` transformers' callbacks see from them and its own.
        given_settings: The settings the saver was given explicitly, which override the user's
            ``TrainingArguments`` when `HFFlow` was given some (``wrap_trainer_callbacks(args=...)``).
    """

    settings: CheckpointSettings
    given_settings: dict[str, Any]

    def inherit(self, args: Any) -> None:
        """Takes every setting not given explicitly from the user's ``TrainingArguments``."""

    def save_hf_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule | None = None) -> str:
        """Writes ``checkpoint-<global_step>`` now (every rank calls it) and returns its folder."""

    def finish_hf_training(self, trainer: L.Trainer, pl_module: L.LightningModule | None = None) -> None:
        """transformers' end of training: loads the best model, prunes (before ``on_train_end``)."""


__all__ = ["CheckpointSaver"]
