"""Warmup: a learning-rate warmup on top of any optimizer and scheduler.

For users who bring their own optimizer and scheduler (``LightningCLI --optimizer ... --lr_scheduler ...``, whose
scheduler usually steps per epoch, or a hand-written ``configure_optimizers``) and want HF-style warmup per optimizer
step. The factor multiplies the lr the scheduler set, for the optimizer step only: a torch optimizer step pre-hook
scales ``param_group["lr"]`` and the post-hook restores it before Lightning steps the scheduler, so chainable schedulers
(StepLR, ExponentialLR, ReduceLROnPlateau), which read ``param_group["lr"]``, never see the warmed value. The lr that
HFModule logs (read in ``on_before_optimizer_step``) is the lr the step used; Lightning's ``LearningRateMonitor``,
which reads before the step, shows the scheduler's lr.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback

WarmupShape = Literal["linear", "cosine"]


def warmup_factor(step: int, total: int, shape: WarmupShape = "linear", start_factor: float = 0.0) -> float:
    """The lr multiplier of optimizer step ``step`` (0-based) of a ``total``-step warmup.

    ``linear`` is transformers' ``get_linear_schedule_with_warmup`` rise (``step / total``: the first step runs at
    ``start_factor``); ``cosine`` rises along half a cosine, ``(1 - cos(pi * step / total)) / 2``.
    """
    if step >= total:
        return 1.0
    progress = step / max(1, total)
    rise = progress if shape == "linear" else 0.5 * (1.0 - math.cos(math.pi * progress))
    return start_factor + (1.0 - start_factor) * rise


class Warmup(Callback):
    """Warms the learning rate up over the first optimizer steps, on top of any optimizer and scheduler.

    Args:
        warmup_steps: Number of warmup optimizer steps (>= 1), or a ratio of the total steps (< 1), rounded up as in
            HF (``ceil(total * ratio)``).
        shape: ``linear`` (HF's rise) or ``cosine``.
        start_factor: The multiplier of the first step (0: the first step runs at lr 0, as in HF).
    """

    def __init__(self, warmup_steps: float = 0.1, shape: WarmupShape = "linear", start_factor: float = 0.0) -> None:
        super().__init__()
        if not warmup_steps > 0 or (warmup_steps >= 1 and warmup_steps != int(warmup_steps)):
            raise ValueError(f"Warmup(warmup_steps={warmup_steps}): give a step count >= 1 or a ratio in (0, 1).")
        if shape not in ("linear", "cosine"):
            raise ValueError(f"Warmup(shape='{shape}'): choose 'linear' or 'cosine'.")
        if not 0.0 <= start_factor < 1.0:
            raise ValueError(f"Warmup(start_factor={start_factor}) must be in [0, 1).")
        self.warmup_steps = warmup_steps
        self.shape = shape
        self.start_factor = start_factor
        #: Optimizer steps taken so far and the resolved warmup length (both saved for an exact resume).
        self.steps_done = 0
        self.total_steps: int | None = None
        self._hooks: list[Any] = []
        self._counted: Any = None  # the optimizer whose steps are counted (the first)
        self._saved: list[tuple[dict[str, Any], float]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # LightningCLI's --optimizer/--lr_scheduler replace configure_optimizers on the instance: then the module's
        # own HF schedule (and its warmup) is not used and there is nothing to clash with.
        own_schedule = "configure_optimizers" not in vars(pl_module)
        builtin = getattr(pl_module, "warmup_steps", 0) or 0
        schedule = str(getattr(pl_module, "lr_scheduler_type", "") or "")
        if stage == "fit" and own_schedule and (builtin > 0 or "warmup" in schedule):
            raise ValueError(
                f"The Warmup callback would warm up a second time: the model's HF schedule already does "
                f"(model.optimization.warmup_steps={builtin}, model.optimization.lr_scheduler_type='{schedule}'). "
                "Remove the Warmup callback, or set model.optimization.warmup_steps: 0 and a schedule without warmup "
                "(e.g. model.optimization.lr_scheduler_type: linear)."
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.total_steps is None:
            if self.warmup_steps >= 1:
                self.total_steps = int(self.warmup_steps)
            else:
                total = trainer.estimated_stepping_batches
                if not math.isfinite(total):
                    raise ValueError("Warmup(warmup_steps=<ratio>) needs a known training length: set "
                                     "trainer.max_steps, or give warmup_steps as a step count.")
                self.total_steps = math.ceil(total * self.warmup_steps)
        self._counted = trainer.optimizers[0] if trainer.optimizers else None
        for optimizer in trainer.optimizers:
            self._hooks.append(optimizer.register_step_pre_hook(self._warm))
            self._hooks.append(optimizer.register_step_post_hook(self._restore))

    def _warm(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        factor = warmup_factor(self.steps_done, self.total_steps or 0, self.shape, self.start_factor)
        self._saved = [(group, group["lr"]) for group in optimizer.param_groups] if factor != 1.0 else []
        for group, lr in self._saved:
            group["lr"] = lr * factor

    def _restore(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        for group, lr in self._saved:
            group["lr"] = lr
        self._saved = []
        if optimizer is self._counted:
            self.steps_done += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def state_dict(self) -> dict[str, Any]:
        return {"steps_done": self.steps_done, "total_steps": self.total_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps_done = int(state_dict["steps_done"])
        self.total_steps = state_dict["total_steps"]


__all__ = ["Warmup", "WarmupShape", "warmup_factor"]
