"""The optimizer and its schedule in `HFModule`: transformers' optimizer (decay / no-decay parameter groups) and
schedule built in ``configure_optimizers``, and the end of each accumulation window: the pre-clip norm recorded and
the gradients clipped, the optimizer's step, the scheduler's step and the gradients freed in transformers' order. A
mixin of `HFModule`, which provides ``model``, ``optim_config``, ``optimizer_factory``, ``optimizer_cls_and_kwargs``,
the schedule settings, ``max_grad_norm`` and ``step_record``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from hf_lightning.optim import build_optimizer, build_scheduler, steps_on_metric


class OptimizationMixin:
    """Optimizer, schedule and optimizer step of `HFModule`."""

    def create_optimizer(self) -> torch.optim.Optimizer:
        """HF's optimizer (decay / no-decay groups); override for other parameter groups."""
        return build_optimizer(self.model, **self.optim_config, optimizer_factory=self.optimizer_factory,
                               optimizer_cls_and_kwargs=self.optimizer_cls_and_kwargs, warmup_steps=self.warmup_steps)

    def add_parameters_outside_model(self, optimizer: torch.optim.Optimizer) -> None:
        """Trainable parameters of this module that ``create_optimizer`` left out (those outside ``model``: a learned
        loss weighting such as `hf_lightning.losses.UncertaintyWeightedLoss` given as ``loss`` or set on a subclass)
        train too, in one more group without weight decay."""
        seen = {id(p) for group in optimizer.param_groups for p in group["params"]}
        in_model = {id(p) for p in self.model.parameters()}  # the model's own parameters stay as create_optimizer chose
        extra = [p for p in self.parameters() if p.requires_grad and id(p) not in seen and id(p) not in in_model]
        if extra:
            optimizer.add_param_group({"params": extra, "weight_decay": 0.0})

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer) -> Any:
        """``transformers.get_scheduler`` with HF's warmup rule."""
        return build_scheduler(optimizer, lr_scheduler_type=self.lr_scheduler_type,
                               num_training_steps=num_training_steps, warmup_steps=self.warmup_steps,
                               lr_scheduler_kwargs=self.lr_scheduler_kwargs)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.create_optimizer()
        self.add_parameters_outside_model(optimizer)
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise ValueError("The training length is unknown (an iterable data set): set trainer.max_steps.")
        scheduler = self.create_scheduler(int(steps), optimizer)
        # reduce_lr_on_plateau / greedy step on the evaluation metric: HFFlow steps them after each evaluation
        self.metric_scheduler = scheduler if steps_on_metric(scheduler) else None
        if self.metric_scheduler is not None:
            return {"optimizer": optimizer}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ----------------------------------------------------------------------------------------------- modes
    def switch_optimizer_mode(self, mode: str) -> None:
        """As transformers: an optimizer with ``train()`` / ``eval()`` methods (schedule-free AdamW / SGD / RAdam,
        whose weights for evaluation differ from those it trains) is put in train mode at each training step and in
        eval mode when an evaluation begins."""
        for optimizer in self._trainer.optimizers if self._trainer is not None else []:
            switch = getattr(optimizer, mode, None)
            if callable(switch):
                switch()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.switch_optimizer_mode("train")

    def on_validation_start(self) -> None:
        self.switch_optimizer_mode("eval")

    def on_test_start(self) -> None:
        self.switch_optimizer_mode("eval")

    def on_predict_start(self) -> None:
        self.switch_optimizer_mode("eval")

    # ----------------------------------------------------------------------------------------------- step
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.step_record.learning_rate = optimizer.param_groups[0]["lr"]  # this step's lr (before the scheduler)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Records the pre-clip total norm (HF's ``grad_norm``) and clips to ``max_grad_norm`` when it is > 0."""
        if gradient_clip_val:
            raise ValueError("Set model.optimization.max_grad_norm instead of trainer.gradient_clip_val (it also logs "
                             "grad_norm).")
        from hf_lightning.strategies import clip_grad_norm

        self.step_record.grad_norm = clip_grad_norm(self, optimizer, self.max_grad_norm)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """The step, then, in transformers' order, the scheduler's step and the gradients freed (``set_to_none``):
        right away without a per-step schedule, else in `lr_scheduler_step` (a schedule such as AdafactorSchedule
        reads the gradients). Lightning would zero them only in the next window's closure, after its forward: one set
        of gradients alive through that forward (its size in extra peak memory). Within a window they accumulate."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if any(config.interval == "step" for config in self.trainer.lr_scheduler_configs):
            self._stepped = optimizer
        else:
            optimizer.zero_grad(set_to_none=True)

    def lr_scheduler_step(self, scheduler: Any, metric: Any | None) -> None:
        super().lr_scheduler_step(scheduler, metric)
        if self._stepped is not None:
            self._stepped.zero_grad(set_to_none=True)
            self._stepped = None
