"""HFEarlyStopping: transformers' ``EarlyStoppingCallback`` as a Lightning callback (usable from yaml).

The stopping rule is transformers' own: this callback adds an ``EarlyStoppingCallback`` to `HFFlow`'s handler, which
runs it at each evaluation (improvement = no best yet, or better than the best *before* this evaluation by more than
the threshold; stop when the counter reaches the patience, at the end of that step). Its counter is saved in
``trainer_state.json`` (``stateful_callbacks``) by `HFCheckpoint` and, in a Lightning ``.ckpt``, in this callback's
``state_dict``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from transformers import EarlyStoppingCallback

from hf_lightning.callbacks.hf_flow import HFFlow, find_flow


class HFEarlyStopping(Callback):
    """Stops training when ``metric_for_best_model`` stops improving, with transformers' rule.

    Needs an evaluation schedule (HFFlow ``eval_strategy`` ``steps`` or ``epoch``) and ``metric_for_best_model``
    (on HFFlow or HFCheckpoint).

    Args:
        early_stopping_patience: Evaluations without improvement before training stops.
        early_stopping_threshold: How much the metric must improve on the best to count as an improvement.
    """

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0) -> None:
        super().__init__()
        if early_stopping_patience < 1 or early_stopping_threshold < 0:
            raise ValueError(f"early_stopping_patience={early_stopping_patience} must be >= 1 and "
                             f"early_stopping_threshold={early_stopping_threshold} >= 0.")
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold
        self._flow: HFFlow | None = None

    def _hf_callback(self) -> EarlyStoppingCallback | None:
        # Looked up each time: a resume with restore_callback_states_from_checkpoint replaces the instance.
        if self._flow is None:
            return None
        return next((cb for cb in self._flow.handler.callbacks if isinstance(cb, EarlyStoppingCallback)), None)

    @property
    def counter(self) -> int:
        """Evaluations since the last improvement (transformers' ``early_stopping_patience_counter``)."""
        callback = self._hf_callback()
        return callback.early_stopping_patience_counter if callback is not None else 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        flow = find_flow(trainer)
        if flow is None:
            raise ValueError("HFEarlyStopping needs an HFFlow callback: use an HFModule (it adds one) or add "
                             "hf_lightning.callbacks.HFFlow to trainer.callbacks.")
        self._flow = flow
        if self._hf_callback() is None:
            flow.add_callback(EarlyStoppingCallback(self.early_stopping_patience, self.early_stopping_threshold))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After every setup (the flow resolves the best metric from its and HFCheckpoint's settings there).
        flow = self._flow
        if flow is None or flow.best.name is None or flow.settings.eval_strategy == "no":
            raise ValueError(
                "HFEarlyStopping needs an evaluation schedule and a metric: set eval_strategy ('steps' or 'epoch') on "
                "HFFlow and metric_for_best_model on HFFlow or HFCheckpoint."
            )

    def state_dict(self) -> dict[str, Any]:
        return {"early_stopping_patience_counter": self.counter}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        callback = self._hf_callback()
        if callback is not None:
            callback.early_stopping_patience_counter = int(state_dict.get("early_stopping_patience_counter", 0))


__all__ = ["HFEarlyStopping"]
