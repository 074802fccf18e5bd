"""The typed records a module fills and the callbacks read: one place for per-step and per-evaluation values.

`HFModule` (and any LightningModule with a ``step_record``) writes a `StepRecord` as it trains; `HFFlow` reads it at
each optimizer step (the loss into HF's running ``tr_loss``) and at logging steps (``grad_norm``, ``learning_rate``,
the floating-point operations), `GradientMonitor` reads the loss. An evaluation fills an `EvalRecord`.
Tensors stay on the device: a reader converts them (a host sync) only where it logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class StepRecord:
    """The latest optimizer step, as the module saw it.

    Attributes:
        loss: The step's loss: the sum of its accumulation window's normalised micro-batch losses (HF's per-step
            ``tr_loss``); None before the first step.
        micro_losses: Those micro-batch losses, in order (transformers' nan / inf filter replaces each non-finite one).
        grad_norm: The total gradient norm before clipping (HF's ``grad_norm``).
        learning_rate: The learning rate the step used (before the scheduler moved it).
        flos: Floating-point operations since `HFFlow` last stored them (HF's ``current_flos``).
    """

    loss: torch.Tensor | None = None
    micro_losses: tuple[torch.Tensor, ...] = ()
    grad_norm: torch.Tensor | float | None = None
    learning_rate: float | None = None
    flos: float = 0.0

    def take_flos(self) -> float:
        """The operations counted since the last call (HF's ``store_flos`` then resets ``current_flos``)."""
        flos, self.flos = self.flos, 0.0
        return flos


@dataclass
class EvalRecord:
    """The latest evaluation (validation / test) of the module.

    Attributes:
        per_set: One metrics dict per evaluation set (one set, or each of a dict of sets, in order), keys
            ``eval_<metric>`` or ``eval_<set>_<metric>`` as transformers names them.
        metrics: All sets' metrics together.
    """

    per_set: list[dict[str, float]] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        return {k: v for metrics in self.per_set for k, v in metrics.items()}


@runtime_checkable
class ReportsSteps(Protocol):
    """A LightningModule that fills a `StepRecord` (`HFModule` does)."""

    step_record: StepRecord


@runtime_checkable
class ReportsEvaluations(Protocol):
    """A LightningModule that fills an `EvalRecord` (`HFModule` does)."""

    eval_record: EvalRecord


def step_record(module: Any) -> StepRecord | None:
    """The module's `StepRecord`, or None for a module that keeps none."""
    return module.step_record if isinstance(module, ReportsSteps) else None


def eval_metrics(module: Any) -> dict[str, float]:
    """The module's latest evaluation metrics (all sets), or {} for a module that keeps none."""
    return module.eval_record.metrics if isinstance(module, ReportsEvaluations) else {}


__all__ = ["EvalRecord", "ReportsEvaluations", "ReportsSteps", "StepRecord", "eval_metrics", "step_record"]
