"""GradientMonitor: gradient norms, non-finite guard and spike warnings for any LightningModule.

Everything runs in ``on_before_optimizer_step``: Lightning calls it after the backward of the last micro-batch of an
accumulation window and *before* clipping (``configure_gradient_clipping``), so the norms are the pre-clip values that
HF logs as ``grad_norm``.

Skipping a step (``on_nonfinite="skip_step"``): the clean way for a callback under automatic optimisation is to set
every ``p.grad`` to ``None`` here. torch optimizers (SGD, Adam, AdamW, fused or not) skip parameters without a
gradient, so neither the weights, nor the moments, nor Adam's per-parameter ``step`` count change (weight decay is
skipped too); clipping sees no gradient. Lightning still counts the step: ``global_step`` and a per-step scheduler
advance, as they do when the fp16 grad scaler skips a step. DeepSpeed's own optimizers are not torch optimizers and are
not covered.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import grad_norm
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from hf_lightning.modules.records import step_record

NonFinitePolicy = Literal["warn", "skip_step", "stop"]


class GradientMonitor(Callback):
    """Logs gradient norms before clipping, guards against non-finite values and warns about norm spikes.

    Args:
        log_every_n_steps: Log every N optimizer steps. None: HFFlow's ``logging_steps`` when an HFFlow with
            ``logging_strategy="steps"`` is on the trainer, else the trainer's ``log_every_n_steps``.
        layer_depth: Also log one norm per parameter-name prefix of this many dot-separated parts (names as in
            ``pl_module.named_parameters()``; HFModule's start with ``model.``). 0 logs the total only.
        histograms: Also write one gradient histogram per prefix to the TensorBoard logger(s) at logging steps.
        norm_type: The p of the p-norm (``inf`` for the max norm).
        on_nonfinite: What to do when the loss or a gradient is NaN/inf: ``warn``; ``skip_step`` (leave the weights
            and the optimizer state untouched for that step); ``stop`` (skip the step, then stop training).
        max_reported: How many offending parameter names the message lists.
        spike_factor: Warn when the norm exceeds this many times the running median. None turns it off.
        spike_window: Number of recent finite norms the median is taken over.
        spike_min_history: Norms needed before spikes are reported.
    """

    def __init__(
        self,
        log_every_n_steps: int | None = None,
        layer_depth: int = 0,
        histograms: bool = False,
        norm_type: float = 2.0,
        on_nonfinite: NonFinitePolicy = "warn",
        max_reported: int = 5,
        spike_factor: float | None = 10.0,
        spike_window: int = 100,
        spike_min_history: int = 10,
    ) -> None:
        super().__init__()
        if on_nonfinite not in ("warn", "skip_step", "stop"):
            raise ValueError(f"GradientMonitor(on_nonfinite='{on_nonfinite}'): choose 'warn', 'skip_step' or 'stop'.")
        if layer_depth < 0 or (log_every_n_steps is not None and log_every_n_steps < 1) or spike_window < 1:
            raise ValueError(
                f"GradientMonitor: layer_depth={layer_depth} must be >= 0, log_every_n_steps={log_every_n_steps} "
                f">= 1 (or None), spike_window={spike_window} >= 1."
            )
        self.log_every_n_steps = log_every_n_steps
        self.layer_depth = layer_depth
        self.histograms = histograms
        self.norm_type = float(norm_type)
        self.on_nonfinite = on_nonfinite
        self.max_reported = max_reported
        self.spike_factor = spike_factor
        self.spike_min_history = spike_min_history
        self._history: deque[float] = deque(maxlen=spike_window)
        #: Optimizer steps (1-based, as global_step after the step) whose update was skipped / that spiked.
        self.skipped_steps: list[int] = []
        self.spike_steps: list[int] = []
        #: The norms of the last logging step: ``total`` and one per prefix.
        self.last_norms: dict[str, float] = {}

    # ----------------------------------------------------------------------------------------------- the hook
    @torch.no_grad()
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        step = trainer.global_step + 1
        total = torch.nn.utils.get_total_norm(grads, self.norm_type)
        record = step_record(pl_module)
        loss = record.loss if record is not None else None
        checked = torch.stack([total.float(), loss.detach().float().to(total.device)]) if loss is not None else total
        # One host sync per step: the decision must be known before the optimizer steps.
        values = torch.atleast_1d(checked).tolist()
        local_bad = not all(math.isfinite(v) for v in values)
        if trainer.strategy.reduce_boolean_decision(local_bad, all=False):
            self._handle_nonfinite(trainer, pl_module, optimizer, step, values)
            return
        self._check_spike(step, values[0])
        if self._is_logging_step(trainer, step):
            self._log_norms(trainer, pl_module, step, values[0])

    # ----------------------------------------------------------------------------------------------- non-finite
    def _handle_nonfinite(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any, step: int,
                          values: list[float]) -> None:
        names = [name for name, p in pl_module.named_parameters()
                 if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        shown = ", ".join(names[: self.max_reported]) + (" ..." if len(names) > self.max_reported else "")
        loss = f"loss {values[1]}, " if len(values) > 1 else ""
        action = {"warn": "the optimizer steps anyway",
                  "skip_step": "the update is skipped (weights and optimizer state unchanged)",
                  "stop": "the update is skipped and training stops"}[self.on_nonfinite]
        offending = f"{len(names)} parameter(s) with non-finite gradients{': ' + shown if names else ''}"
        rank_zero_warn(f"Step {step}: non-finite values ({loss}gradient norm {values[0]}); {offending}. "
                       f"on_nonfinite='{self.on_nonfinite}': {action}.")
        if self.on_nonfinite == "warn":
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None  # torch optimizers skip parameters without a gradient: no update, no state change
        self.skipped_steps.append(step)
        if self.on_nonfinite == "stop":
            from hf_lightning.callbacks.hf_flow import find_flow

            flow = find_flow(trainer)
            if flow is not None:  # HF's way: honoured at the end of the step (on_epoch_end and the final log fire)
                flow.control.should_training_stop = True
            trainer.should_stop = True

    # ----------------------------------------------------------------------------------------------- spikes
    def _check_spike(self, step: int, norm: float) -> None:
        if self.spike_factor is not None and len(self._history) >= self.spike_min_history:
            median = statistics.median(self._history)
            if norm > self.spike_factor * median:
                self.spike_steps.append(step)
                rank_zero_warn(f"Step {step}: gradient norm {norm:.4g} is more than {self.spike_factor:g} x the median "
                               f"{median:.4g} of the last {len(self._history)} steps.")
        self._history.append(norm)

    # ----------------------------------------------------------------------------------------------- logging
    def _is_logging_step(self, trainer: L.Trainer, step: int) -> bool:
        every = self.log_every_n_steps
        if every is None:
            from hf_lightning.callbacks.hf_flow import find_flow

            flow = find_flow(trainer)
            use_flow = flow is not None and flow.settings.logging_strategy == "steps" and flow.state.logging_steps
            every = int(flow.state.logging_steps) if use_flow else trainer.log_every_n_steps
        return step % max(every, 1) == 0

    def _log_norms(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int, total: float) -> None:
        norms = {"total": total}
        if self.layer_depth or self.histograms:
            # Lightning's utility gives one norm per parameter; groups combine them: (sum |g_i|^p)^(1/p).
            per_param = grad_norm(pl_module, self.norm_type, group_separator="\t")
            groups: dict[str, list[float]] = {}
            for key, value in per_param.items():
                if "\t" in key:
                    groups.setdefault(self._prefix(key.split("\t", 1)[1]), []).append(float(value))
            if self.layer_depth:
                norms.update({name: self._combine(vals) for name, vals in groups.items()})
            if self.histograms:
                self._write_histograms(trainer, pl_module, step)
        self.last_norms = norms
        if trainer.is_global_zero:
            metrics = {f"grad_norm/{name}": value for name, value in norms.items()}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    def _prefix(self, name: str) -> str:
        return ".".join(name.split(".")[: self.layer_depth or 1])

    def _combine(self, values: list[float]) -> float:
        if math.isinf(self.norm_type):
            return max(values)
        return sum(v ** self.norm_type for v in values) ** (1.0 / self.norm_type)

    def _write_histograms(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        writers = [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not writers or not trainer.is_global_zero:
            return
        groups: dict[str, list[torch.Tensor]] = {}
        for name, p in pl_module.named_parameters():
            if p.grad is not None:
                groups.setdefault(self._prefix(name), []).append(p.grad.detach().float().flatten().cpu())
        for name, parts in groups.items():
            for writer in writers:
                writer.add_histogram(f"grad/{name}", torch.cat(parts), global_step=step)

    # ----------------------------------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self._history), "skipped_steps": list(self.skipped_steps),
                "spike_steps": list(self.spike_steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._history.clear()
        self._history.extend(state_dict.get("history", []))
        self.skipped_steps = list(state_dict.get("skipped_steps", []))
        self.spike_steps = list(state_dict.get("spike_steps", []))


__all__ = ["GradientMonitor", "NonFinitePolicy"]
