"""The records HFFlow keeps, as transformers.Trainer keeps them: log records (``Trainer.log``), the running training
loss with HF's NaN / inf filter, floating-point operations (``store_flos``) and the best metric
(``_determine_best_metric``). A mixin of `HFFlow`, which owns the state these methods read and write (``settings``,
``best``, ``state``, ``handler`` and the loss accumulators).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from transformers import TrainerState
from transformers.integrations.integration_utils import rewrite_logs
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import TrainerMemoryTracker, speed_metrics
from transformers.training_args import trainer_log_levels
from transformers.utils import logging as hf_logging

from hf_lightning.modules.records import StepRecord
from hf_lightning.progress import updates_per_epoch
from hf_lightning.settings import BestMetric, CheckpointSettings, FlowSettings

log = hf_logging.get_logger("transformers.trainer")  # transformers.Trainer's logger: log_level applies


def process_log_level(args: Any, main: bool) -> int:
    """transformers' ``get_process_log_level``: ``log_level`` on the main process, ``log_level_replica`` on the
    others; ``passive`` keeps the current verbosity."""
    level = trainer_log_levels[args.log_level if main else args.log_level_replica]
    return hf_logging.get_verbosity() if level == -1 else level


def write_to_loggers(loggers: list[Any], logs: dict[str, Any], step: int) -> None:
    """One log record to Lightning loggers with the tags of HF's TensorBoard integration (``train/loss``,
    ``eval/loss``, ...: transformers' ``rewrite_logs``), as transformers' TensorBoard callback writes it: numbers as
    scalars, strings as text (TensorBoard), anything else dropped with its warning."""
    rewritten = rewrite_logs(logs)
    scalars = {k: v for k, v in rewritten.items() if isinstance(v, (int, float))}
    texts = {k: v for k, v in rewritten.items() if isinstance(v, str)}
    for k, v in rewritten.items():
        if k not in scalars and k not in texts:
            log.warning(f'Trainer is attempting to log a value of "{v}" of type {type(v)} for key "{k}" as a scalar. '
                        "This invocation of Tensorboard's writer.add_scalar() is incorrect so we dropped this "
                        "attribute.")
    for logger in loggers:
        logger.log_metrics(scalars, step=step)
        if texts and isinstance(logger, TensorBoardLogger):
            for k, v in texts.items():
                logger.experiment.add_text(k, v, step)



def schedule_metric_missing(key: str, metrics: dict[str, Any]) -> KeyError:
    """transformers' error for a metric-stepped schedule (``reduce_lr_on_plateau``) whose metric the evaluation lacks."""
    return KeyError(f"The `metric_for_best_model` training argument is set to '{key}', which is not found in the "
                    f"evaluation metrics. The available evaluation metrics are: {list(metrics.keys())}. Please ensure "
                    f"that the `compute_metrics` function returns a dictionary that includes '{key}' or consider "
                    "changing the `metric_for_best_model` via the TrainingArguments.")

class MemoryTracker(TrainerMemoryTracker):
    """transformers' memory metrics (``skip_memory_metrics=False``: ``<stage>_mem_cpu_alloc_delta``, ...).

    transformers names each stage after the method that calls the tracker (``train``, ``evaluate``, ``predict``);
    here Lightning's hooks start and end the stages, so the caller names the stage.
    """

    _call_stage = "init"

    def derive_stage(self) -> str:
        return self._call_stage

    def start_stage(self, stage: str) -> None:
        """Starts measuring ``stage`` (``init``, ``train``, ``eval``, ``test``); ignored inside another stage."""
        self._call_stage = stage
        self.start()

    def stop_stage(self, stage: str, metrics: dict[str, float] | None = None) -> None:
        """Ends ``stage`` and adds its memory metrics (and, the first time, the init ones) to ``metrics``."""
        self._call_stage = stage
        self.stop_and_update_metrics(metrics)


class FlowRecords:
    """HF's logging and best-metric bookkeeping; mixed into `HFFlow` (which provides ``event``)."""

    settings: FlowSettings
    checkpoint_settings: CheckpointSettings
    best: BestMetric
    state: Any
    _record: StepRecord | None  # the module's per-step record (HFFlow looks it up once per fit)
    log_override: Any
    _log_trainer: L.Trainer | None
    _tr_loss: torch.Tensor | None
    _total_loss: float
    _last_logged: int
    _state_restored: bool
    _initial_tokens: int

    def write_log(self, logs: dict[str, float], trainer: L.Trainer | None = None,
                  start_time: float | None = None) -> None:
        """HF's ``Trainer.log``: adds epoch (and tokens seen), appends to log_history, writes loggers, fires on_log.

        Args:
            logs: The record; ``epoch`` (and ``num_input_tokens_seen``) are added to it.
            trainer: Writes the record to its loggers with HF's TensorBoard tags when given.
            start_time: Training start; with token tracking adds ``train_runtime`` / ``train_tokens_per_second``.
        """
        if self.log_override is not None:  # an overridden Trainer.log; its super().log() comes back to record_log
            self._log_trainer = trainer
            # transformers passes start_time with the training records only (an override may take just `logs`)
            self.log_override(logs, start_time) if start_time is not None else self.log_override(logs)
            return
        self.record_log(logs, trainer, start_time)

    def record_log(self, logs: dict[str, float], trainer: L.Trainer | None = None,
                   start_time: float | None = None) -> None:
        """The body of `write_log`, without the override hook."""
        trainer = trainer if trainer is not None else self._log_trainer
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        if self.settings.include_num_input_tokens_seen != "no":
            logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
            if start_time is not None:
                tokens = self.state.num_input_tokens_seen - self._initial_tokens
                logs.update(speed_metrics("train", start_time, num_tokens=tokens))
        self.state.log_history.append({**logs, "step": self.state.global_step})
        if trainer is not None and trainer.is_global_zero:
            write_to_loggers(trainer.loggers, logs, self.state.global_step)
        self.event("on_log", logs=logs)

    def _add_step_loss(self, pl_module: L.LightningModule) -> None:
        record = self._record
        step_loss = record.loss if record is not None else None
        if step_loss is None:
            return
        step_loss = step_loss.detach().float()
        if self._tr_loss is None:
            self._tr_loss = torch.zeros((), device=step_loss.device)
        micro = record.micro_losses if record is not None and len(record.micro_losses) > 1 else (step_loss,)
        if self.settings.logging_nan_inf_filter:
            # HF, for each micro-batch: a non-finite loss adds the mean of the steps since the last log, so far (no
            # host sync here)
            steps = 1 + self.state.global_step - 1 - self._last_logged
            for loss in micro:
                loss = loss.detach().float()
                self._tr_loss = self._tr_loss + torch.where(torch.isfinite(loss), loss, self._tr_loss / steps)
            return
        self._tr_loss = self._tr_loss + step_loss

    def _train_logs(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        tr_loss = self._tr_loss if self._tr_loss is not None else torch.zeros(())
        total = float(trainer.strategy.reduce(tr_loss, reduce_op="mean"))
        self._tr_loss = torch.zeros_like(tr_loss)
        logs = {"loss": total / (self.state.global_step - self._last_logged)}
        record = self._record
        if record is not None and record.grad_norm is not None:
            logs["grad_norm"] = float(record.grad_norm)
        if record is not None and record.learning_rate is not None:
            logs["learning_rate"] = record.learning_rate
        self._total_loss += total
        self._last_logged = self.state.global_step
        self.store_flos(trainer, pl_module)
        return logs

    def store_flos(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """HF's ``store_flos``: moves the module's flos count (summed over ranks) into ``state.total_flos``."""
        record = self._record
        current = record.take_flos() if record is not None else 0.0
        if trainer.world_size > 1:
            current = float(trainer.strategy.reduce(torch.tensor(current, device=pl_module.device), reduce_op="sum"))
        self.state.total_flos += current

    def determine_best_metric(self, metrics: dict[str, float]) -> bool:
        """HF's ``_determine_best_metric``: updates best_metric / best_global_step; True on a new best."""
        name, key = self.best.name, self.best.key
        if key is None:
            return False
        if key not in metrics:
            raise KeyError(  # transformers' message, then where such a metric comes from
                f"The `metric_for_best_model` training argument is set to '{key}', which is not found in the "
                f"evaluation metrics. The available evaluation metrics are: {list(metrics.keys())}. Consider changing "
                f"the `metric_for_best_model` via the TrainingArguments (metric_for_best_model='{name}': name one of "
                "them, with or without the 'eval_' prefix, or add it to compute_metrics / model.metrics)."
            )
        greater = self.best.greater_is_better
        better = np.greater if greater else np.less
        if self.state.best_metric is None:
            self.state.best_metric = float("-inf") if greater else float("inf")
        if better(metrics[key], self.state.best_metric):
            self.state.best_metric = metrics[key]
            if self.checkpoint_settings.tracks_best_checkpoint:
                self.state.best_global_step = self.state.global_step
            return True
        return False

    def _step_metric_scheduler(self, pl_module: L.LightningModule, metrics: dict[str, float]) -> None:
        """transformers' ``_evaluate``: a reduce_lr_on_plateau / greedy schedule steps on ``metric_for_best_model``
        (``loss`` by default) after each evaluation of the training loop (not the one of ``eval_on_start``)."""
        scheduler = getattr(pl_module, "metric_scheduler", None)
        if scheduler is None:
            return
        name = self.best.name or "loss"
        key = name if name.startswith("eval_") else f"eval_{name}"
        if key not in metrics:
            raise schedule_metric_missing(key, metrics)
        scheduler.step(metrics[key])

    def _log_run_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """transformers' "***** Running training *****" block, on its logger (``log_level`` applies)."""
        if not log.isEnabledFor(logging.INFO):
            return
        state, per_device = self.state, self.state.train_batch_size or 0
        total = per_device * trainer.accumulate_grad_batches * trainer.world_size
        split = getattr(trainer.datamodule, "split", None)
        try:
            examples = len(split("train")) if callable(split) else None
        except (TypeError, ValueError):
            examples = None
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        log.info("***** Running training *****")
        if examples is not None:
            log.info(f"  Num examples = {examples:,}")
        log.info(f"  Num Epochs = {state.num_train_epochs:,}")
        batches = trainer.num_training_batches
        updates = state.max_steps if math.isinf(batches) else updates_per_epoch(int(batches),
                                                                                 trainer.accumulate_grad_batches)
        log.info(f"  Num update steps per epoch = {updates:,}")
        log.info(f"  Instantaneous batch size per device = {per_device:,}")
        log.info(f"  Total train batch size (w. parallel, distributed & accumulation) = {total:,}")
        log.info(f"  Gradient Accumulation steps = {trainer.accumulate_grad_batches}")
        log.info(f"  Total optimization steps = {state.max_steps:,}")
        log.info(f"  Number of trainable parameters = {trainable:,}")

    def callback_states(self) -> dict[str, Any]:
        """transformers' ``stateful_callbacks``: the ExportableState TrainerCallbacks and the control, saved form."""
        exportable = [cb for cb in [*self.handler.callbacks, self.control] if isinstance(cb, ExportableState)]
        return TrainerState(stateful_callbacks=exportable).stateful_callbacks

    def state_dict(self) -> dict[str, Any]:
        return {"trainer_state": self.state.__dict__.copy(), "total_loss": self._total_loss,
                "callbacks": {type(cb).__name__: cb.state() for cb in self.handler.callbacks
                              if isinstance(cb, ExportableState)}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.state = TrainerState(**state_dict["trainer_state"])
        self._state_restored = True  # a resume: the saved callback states stay in the state, as in transformers
        self._total_loss = state_dict.get("total_loss", 0.0)
