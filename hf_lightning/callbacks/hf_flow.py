"""HFFlow: transformers.Trainer's main-loop bookkeeping as one Lightning callback.

It owns what HF's loop owns: the `transformers.TrainerState` (global_step, float epoch, log_history, best metric),
the `TrainerControl` flags, and a real `transformers.trainer_callback.CallbackHandler` whose first callback is HF's
own `DefaultFlowCallback`, so *when* to log, evaluate, save and stop is decided by transformers' code, and any
`transformers.TrainerCallback` (EarlyStoppingCallback, PrinterCallback, a tutorial's custom one) runs unchanged.

Lightning hooks -> HF events, in ``transformers.Trainer._run_epoch``'s order (tests/parity/test_callback_parity.py):
setup -> on_init_end (when this callback owns its handler); on_train_start -> on_train_begin (+ eval_on_start);
on_train_epoch_start -> on_epoch_begin; first micro-batch of a window -> on_step_begin, the others -> on_substep_end;
on_before_optimizer_step -> on_pre_optimizer_step; the optimizer's step post-hook -> on_optimizer_step (before the
scheduler steps and global_step advances, as in HF); on_train_batch_end -> on_step_end, log, evaluate, save, then on
the last batch or a stop flag on_epoch_end, log, evaluate, save; on_train_end -> final log, on_train_end.
Evaluation runs Lightning's validation loop from here, where HF evaluates (after that step's log, before the save and
on_epoch_end): Lightning has no public hook to validate at a given optimizer step, so with ``control_validation`` the
epoch loop's `_should_check_val_fx` is switched off and the loop is run with the steps Lightning's epoch loop takes.
Saving is delegated to a trainer callback with ``save_hf_checkpoint(trainer, pl_module)`` (HFCheckpoint), and the
end of training (best model, pruning) to its ``finish_hf_training(trainer, pl_module)``, run before on_train_end.
A resume inside an epoch (Lightning skips on_train_epoch_start then) fires on_epoch_begin before its first batch (or
before on_epoch_end, when a resume at the end of an iterable data set's pass leaves the epoch without a batch).
Difference: Lightning clips gradients after ``on_before_optimizer_step``, so on_pre_optimizer_step sees them unclipped.
Two mixins hold parts of it: `FlowRecords` (``flow_records.py``: log records, losses, flos, best metric) and
`FlowEvaluation` (``flow_evaluation.py``: ``_evaluate`` and the validation hooks).
"""

from __future__ import annotations

import math
import sys
import time
import weakref
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
from accelerate.utils.memory import clear_device_cache
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback
from transformers.trainer_utils import speed_metrics
from transformers.utils import logging as hf_logging

from hf_lightning import lightning_internals as internals
from hf_lightning import progress
from hf_lightning.args import callback_arguments
from hf_lightning.callbacks.contracts import CheckpointSaver
from hf_lightning.callbacks.flow_evaluation import FlowEvaluation
from hf_lightning.callbacks.flow_records import FlowRecords, MemoryTracker, log, process_log_level
from hf_lightning.callbacks.throughput import count_input_tokens
from hf_lightning.data.loader import split_window
from hf_lightning.modules.records import StepRecord, step_record
from hf_lightning.optim import trainer_scheduler
from hf_lightning.settings import BestMetric, CheckpointSettings, FlowSettings

#: ``report_to`` names that the Lightning trainer's loggers write in the Lightning door (HFFlow writes HF's records to
#: them); every other name is transformers' own reporting callback, run by HFFlow's handler
LIGHTNING_LOGGERS = {"tensorboard": TensorBoardLogger, "csv": CSVLogger}


class HFFlow(FlowRecords, FlowEvaluation, Callback):
    """Runs HF's training-loop flow (state, control, logging, evaluation schedule, TrainerCallbacks) on Lightning.

    Args:
        logging_strategy: ``steps``, ``epoch`` or ``no``.
        logging_steps: Log every N optimizer steps (a float < 1 is a ratio of the total steps).
        logging_first_step: Also log the first step.
        logging_nan_inf_filter: Replace a non-finite step loss by the mean of the steps since the last log.
        eval_strategy: ``no``, ``steps`` or ``epoch``.
        eval_steps: Evaluate every N optimizer steps (defaults to logging_steps, as in HF).
        eval_delay: Steps (or epochs) to wait before the first evaluation.
        eval_on_start: Evaluate once before the first step.
        metric_for_best_model: Metric that defines the best model (``loss`` -> ``eval_loss``).
        greater_is_better: Whether a larger metric is better (default: not a ``*loss`` metric).
        include_num_input_tokens_seen: ``no``, ``all`` / True, or ``non_padding``: count input tokens as HF does.
        log_level: Log level of the main process (HF's ``log_level``).
        log_level_replica: Log level of the other processes (HF's ``log_level_replica``).
        log_on_each_node: With several nodes, whether each node's first process counts as a main one for logging.
        report_to: Kept on ``args`` for TrainerCallbacks that read it; in the CLI the loggers are ``trainer.logger``.
        run_name: Run name, on ``args`` for TrainerCallbacks.
        logging_dir: TensorBoard folder of the HF-style Trainer; in the CLI the logger's ``save_dir`` decides.
        skip_memory_metrics: False adds transformers' memory metrics (``train_mem_cpu_alloc_delta``, ...) to the
            train metrics.
        torch_empty_cache_steps: Free the accelerator's memory cache every N optimizer steps (before the backward
            pass, as transformers), trading speed for a lower peak.
        callbacks: ``transformers.TrainerCallback`` instances or classes to run.
        args: The ``TrainingArguments`` the TrainerCallbacks see (the HF-style Trainer passes its own); the settings
            above are then read from it.
        handler: An existing ``CallbackHandler`` to drive (the HF-style Trainer's); ``callbacks`` are added to it.
        control_validation: Whether this callback decides when Lightning validates. Default: when eval_strategy is not
            ``no`` (otherwise Lightning's own ``val_check_interval`` schedule applies).
        settings: All the settings above as one `FlowSettings` (what ``translate(args).flow`` gives); replaces them.

    Each setting is read from ``self.settings``; the ``TrainingArguments`` that transformers' callbacks receive
    (``self.args``) is ``args`` or, in the Lightning door, built once per fit from this callback's and the
    checkpoint callback's settings (`hf_lightning.args.callback_arguments`), and never changed.
    """

    def __init__(
        self,
        logging_strategy: str = "steps",
        logging_steps: float = 500,
        logging_first_step: bool = False,
        logging_nan_inf_filter: bool = True,
        eval_strategy: str = "no",
        eval_steps: float | None = None,
        eval_delay: float = 0,
        eval_on_start: bool = False,
        metric_for_best_model: str | None = None,
        greater_is_better: bool | None = None,
        include_num_input_tokens_seen: str | bool = "no",
        log_level: str = "passive",
        log_level_replica: str = "warning",
        log_on_each_node: bool = True,
        report_to: str | list[str] | None = None,
        run_name: str | None = None,
        logging_dir: str | None = None,
        skip_memory_metrics: bool = True,
        torch_empty_cache_steps: int | None = None,
        callbacks: list[Any] | None = None,
        args: TrainingArguments | None = None,
        handler: CallbackHandler | None = None,
        control_validation: bool | None = None,
        settings: FlowSettings | None = None,
    ) -> None:
        super().__init__()
        if settings is None:
            settings = FlowSettings.from_args(args) if args is not None else FlowSettings(
                logging_strategy=logging_strategy, logging_steps=logging_steps, logging_first_step=logging_first_step,
                logging_nan_inf_filter=logging_nan_inf_filter, eval_strategy=eval_strategy, eval_steps=eval_steps,
                eval_delay=eval_delay, eval_on_start=eval_on_start, metric_for_best_model=metric_for_best_model,
                greater_is_better=greater_is_better, include_num_input_tokens_seen=include_num_input_tokens_seen,
                log_level=log_level, log_level_replica=log_level_replica, log_on_each_node=log_on_each_node,
                report_to=report_to, run_name=run_name, logging_dir=logging_dir,
                skip_memory_metrics=skip_memory_metrics, torch_empty_cache_steps=torch_empty_cache_steps,
            )
        self.settings = settings
        self._given_args = args
        self._args: TrainingArguments | None = args
        self.best = BestMetric.resolve(settings, CheckpointSettings())
        self.checkpoint_settings = CheckpointSettings()
        self.state = TrainerState()
        self.control = TrainerControl()
        self._init_end_pending = handler is None  # the HF-style Trainer fires on_init_end itself
        self._handler: CallbackHandler | None = handler
        self._handler_ref: Any = None  # see `hold_handler_weakly`
        #: the Lightning door: report_to's trackers, transformers' own callbacks, join the handler in `setup` (built
        #: in each process, so that this callback pickles for a spawning strategy)
        self._reporters_pending = handler is None
        if handler is None:
            self._handler = handler = CallbackHandler([DefaultFlowCallback], None, None, None, None)
        for callback in _trainer_callbacks(callbacks or [], "HFFlow(callbacks=...)"):
            handler.add_callback(callback)
        self.log_override: Any = None  # set by the HF-style Trainer when a subclass overrides Trainer.log
        #: set by the HF-style Trainer when a subclass overrides Trainer.evaluate: () -> the metrics it returns
        self.evaluate_override: Any = None
        #: set by the HF-style Trainer when a subclass overrides transformers' step-end methods, each a () -> ... that
        #: calls the override: ``_maybe_log_save_evaluate``, ``_evaluate`` (-> the metrics), ``_save_checkpoint``
        self.log_save_evaluate_override: Any = None
        self.evaluate_step_override: Any = None
        self.save_checkpoint_override: Any = None
        self._log_trainer: L.Trainer | None = None
        self.control_validation = settings.eval_strategy != "no" if control_validation is None else control_validation
        self._tr_loss: torch.Tensor | None = None
        self._total_loss = 0.0
        self._last_logged = 0
        self._seen_step = 0
        self._steps_in_epoch = 0
        self._start_time = 0.0
        self._initial_step = 0
        self._step_hook: Any = None
        self._optimizer_event_fired = False
        self._epoch_ended = False
        self._epoch_began = False  # on_epoch_begin fired for the epoch now running
        self._state_restored = False  # load_state_dict ran for the coming fit (a resume)
        self._validations = 0
        self._pending_tokens: torch.Tensor | int = 0
        self._initial_tokens = 0
        self._batch_size: int | None = None
        self._record: StepRecord | None = None
        self._train_began = False  # on_train_start ran in this fit
        self.last_eval_metrics: dict[str, float] = {}
        #: transformers' memory metrics (the HF-style Trainer passes its own, which also measured its init)
        self.memory_tracker = MemoryTracker(settings.skip_memory_metrics)

    def _add_reporters(self, trainer: L.Trainer) -> None:
        """The Lightning door: transformers' own callbacks for ``report_to``'s trackers join the handler (second, as
        in transformers); ``tensorboard`` / ``csv`` are the Lightning trainer's loggers there, warned about when it
        has none of that kind (nothing would be written)."""
        from hf_lightning.facade import _report_names, reporting_callbacks

        self._reporters_pending = False
        reporters = reporting_callbacks(self.settings, lightning_loggers=LIGHTNING_LOGGERS)
        self.handler.callbacks[1:1] = [cb() if isinstance(cb, type) else cb for cb in reporters]
        names = _report_names(self.settings)
        for name, kind in LIGHTNING_LOGGERS.items():
            if name in names and not any(isinstance(logger, kind) for logger in trainer.loggers):
                rank_zero_warn(f"HFFlow report_to names {name!r}: in a Lightning trainer that is its logger "
                               f"(trainer.logger: {kind.__module__}.{kind.__name__}), which this one lacks, so nothing "
                               "is written there; add the logger.")

    @property
    def handler(self) -> CallbackHandler:
        """transformers' ``CallbackHandler`` this callback drives (the HF-style Trainer's, or its own)."""
        return self._handler if self._handler is not None else self._handler_ref()

    def hold_handler_weakly(self) -> None:
        """Called by the HF-style Trainer, which owns the handler: this callback lives in the Lightning trainer (whose
        module and strategy refer to each other), so a strong reference would keep the user's callbacks (a tracker's
        open run, which transformers' MLflowCallback ends when the Trainer is dropped) alive until the garbage
        collector runs."""
        if self._handler is not None:
            self._handler_ref, self._handler = weakref.ref(self._handler), None

    # ----------------------------------------------------------------------------------------------- helpers
    @property
    def args(self) -> TrainingArguments:
        """The ``TrainingArguments`` transformers' callbacks receive (read-only; see the class docstring)."""
        if self._args is None:
            self._args = callback_arguments(self.settings, self.checkpoint_settings)
        return self._args

    def prepare(self, trainer: L.Trainer) -> None:
        """Resolves, once per fit, what this callback shares with the trainer's checkpoint saver: the best metric and
        the ``TrainingArguments`` transformers' callbacks see. Called by this callback's and the saver's ``setup``."""
        saver = find_saver(trainer)
        if saver is not None:
            if self._given_args is not None:
                saver.inherit(self._given_args)
            self.checkpoint_settings = saver.settings
        self.best = BestMetric.resolve(self.settings, self.checkpoint_settings)
        self._args = callback_arguments(self.settings, self.checkpoint_settings, base=self._given_args,
                                        overrides=saver.given_settings if saver is not None else None)

    def event(self, name: str, **kwargs: Any) -> None:
        """Calls ``CallbackHandler.<name>`` with HF's arguments and keeps the returned control."""
        self.control = getattr(self.handler, name)(self.args, self.state, self.control, **kwargs)

    def add_callback(self, callback: Any) -> None:
        self.handler.add_callback(callback)

    # ----------------------------------------------------------------------------------------------- set-up
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        accumulate = trainer.accumulate_grad_batches
        if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
            raise ValueError(f"trainer.accumulate_grad_batches={accumulate!r} must be an integer >= 1 (the micro-batches "
                             "per optimizer step): set --trainer.accumulate_grad_batches (or gradient_accumulation_steps"
                             ") to 1 or more.")
        if trainer.world_size > 1:
            from hf_lightning.strategies import synchronize_exit

            synchronize_exit()
        self.prepare(trainer)
        if self._init_end_pending:  # the CLI: this callback applies log_level (the HF-style Trainer did already)
            main = trainer.local_rank == 0 if self.settings.log_on_each_node else trainer.is_global_zero
            hf_logging.set_verbosity(process_log_level(self.settings, main))
        self.handler.model = getattr(pl_module, "model", pl_module)
        self.handler.processing_class = getattr(pl_module, "tokenizer", None)
        if self._reporters_pending:
            self._add_reporters(trainer)
        if self._init_end_pending:
            self._init_end_pending = False
            self.event("on_init_end")
        if stage == "fit":
            self._train_began = False
            internals.after_fit_loop(trainer, lambda: self._end_a_finished_fit(trainer, pl_module))
        if stage == "fit" and self.control_validation:
            # eval_strategy "no" leaves Lightning's own schedule (val_check_interval) in charge.
            self._refuse_lightning_schedule(trainer)
            self._require_validation_data(trainer)
            internals.take_over_validation_schedule(trainer)  # `_evaluate` runs the loop at HF's points

    def _require_validation_data(self, trainer: L.Trainer) -> None:
        """An evaluation schedule over a data module without a validation split would evaluate nothing: refused
        before training, as transformers refuses an ``eval_strategy`` without an ``eval_dataset``."""
        data = trainer.datamodule
        if self.settings.eval_strategy == "no" or not (hasattr(data, "validation_roles") and hasattr(data, "raw_splits")):
            return  # loaders given to fit() directly, or a data module of the user's
        present = data.raw_splits()
        if any(role in present for role in data.validation_roles()):
            return
        wanted = data.split_names.get("validation", getattr(data, "validation_sets", None))
        raise ValueError(
            f"eval_strategy={self.settings.eval_strategy!r} evaluates during training, but the data has no split "
            f"named {wanted!r} (data.validation_split) to evaluate on; its splits: "
            f"{getattr(data, 'loaded_split_names', sorted(present))}. "
            "Set data.validation_split to the name of the split to evaluate on (or data.validation_size to hold out "
            "part of the training split), or eval_strategy to 'no'.")

    def _refuse_lightning_schedule(self, trainer: L.Trainer) -> None:
        """A Lightning validation schedule set beside HFFlow's would be ignored: refused, naming the fix."""
        interval, every = trainer.val_check_interval, trainer.check_val_every_n_epoch
        own_interval = not (isinstance(interval, float) and interval == 1.0)  # Lightning's default; an int 1: each batch
        if not own_interval and every in (1, None):
            return
        given = "val_check_interval" if own_interval else "check_val_every_n_epoch"
        value = interval if own_interval else every
        raise ValueError(
            f"trainer.{given}={value} would be ignored: HFFlow decides when to evaluate "
            f"(eval_strategy='{self.settings.eval_strategy}'). Set HFFlow's eval_strategy / eval_steps instead (e.g. "
            "eval_strategy: steps, eval_steps: N), or eval_strategy: no to leave the schedule to "
            f"trainer.{given}.")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_began = True
        max_steps = trainer.max_steps if trainer.max_steps > 0 else int(trainer.estimated_stepping_batches)
        state = self.state
        state.max_steps = max_steps
        if math.isinf(trainer.num_training_batches) or trainer.num_training_batches == 0:
            # an iterable data set (or a loader without a batch): HF counts one endless epoch
            state.num_train_epochs = sys.maxsize
        elif trainer.max_epochs and trainer.max_epochs > 0:
            state.num_train_epochs = trainer.max_epochs
        else:
            updates = progress.updates_per_epoch(int(trainer.num_training_batches), trainer.accumulate_grad_batches)
            state.num_train_epochs = progress.epochs_for(max_steps, updates)
        state.compute_steps(self.args, max_steps)  # transformers' own: ratios of max_steps, None left at default
        # The per-device batch of this run (a resume then puts the checkpoint's back into the state, as transformers).
        self._batch_size = getattr(trainer.datamodule, "batch_size", None) if trainer.datamodule else None
        self._record = step_record(pl_module)  # looked up once per fit, read at every step
        state.train_batch_size = self._batch_size
        state.is_local_process_zero = trainer.local_rank == 0
        state.is_world_process_zero = trainer.is_global_zero
        if not self._state_restored:  # as transformers' _init_training_state (a resume keeps the loaded ones)
            state.stateful_callbacks = self.callback_states()
        self._state_restored = False
        self.handler.optimizer = trainer.optimizers[0] if trainer.optimizers else None
        self.handler.lr_scheduler = trainer_scheduler(trainer)
        self.handler.train_dataloader = trainer.train_dataloader
        self._remove_step_hook()  # left over from an interrupted fit
        if hasattr(self.handler.optimizer, "register_step_post_hook"):
            # torch's post-hook fires right after optimizer.step(), before Lightning steps the scheduler: HF's point.
            self._step_hook = self.handler.optimizer.register_step_post_hook(self._on_optimizer_step)
        self.memory_tracker.start_stage("train")
        self._log_run_start(trainer, pl_module)
        self._start_time = time.time()
        self._initial_step = state.global_step
        self._initial_tokens = state.num_input_tokens_seen
        self._seen_step = trainer.global_step
        self._last_logged = state.global_step
        self.event("on_train_begin")
        if self.settings.eval_on_start:  # transformers: _evaluate(trial, ignore_keys, skip_scheduler=True)
            self._evaluate_step(trainer, pl_module, skip_scheduler=True)

    def _on_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._optimizer_event_fired = True
        self.event("on_optimizer_step")

    # ----------------------------------------------------------------------------------------------- steps
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches = trainer.num_training_batches
        # HF's float epoch divides by the batches of an epoch (max_steps * GA for an iterable data set).
        self._steps_in_epoch = batches if not math.isinf(batches) else self.state.max_steps * trainer.accumulate_grad_batches
        self._epoch_ended = False
        self._epoch_began = True
        self.event("on_epoch_begin")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not self._epoch_began:  # a resume inside an epoch or at its end: Lightning skips on_train_epoch_start
            self.on_train_epoch_start(trainer, pl_module)
        if batch_idx % trainer.accumulate_grad_batches == 0:
            self.event("on_step_begin")
        if self.settings.include_num_input_tokens_seen != "no":
            # Counted on the device per micro-batch; summed over ranks once per optimizer step (no per-batch sync).
            self._pending_tokens = self._pending_tokens + count_input_tokens(
                split_window(batch)[0], self.settings.include_num_input_tokens_seen,
                getattr(self.handler.model, "main_input_name", "input_ids"),
                getattr(self.handler.processing_class, "pad_token_id", None))

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        steps = self.settings.torch_empty_cache_steps
        if steps is not None and self.state.global_step % steps == 0:  # transformers' point: each micro-batch
            clear_device_cache()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if self.settings.include_num_input_tokens_seen != "no":
            pending = torch.as_tensor(self._pending_tokens, dtype=torch.int64, device=pl_module.device)
            self.state.num_input_tokens_seen += int(trainer.strategy.reduce(pending, reduce_op="sum"))
            self._pending_tokens = 0
        self.event("on_pre_optimizer_step")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step == self._seen_step:
            self.event("on_substep_end")
        else:
            self._seen_step = trainer.global_step
            self._end_step(trainer, pl_module, batch_idx)
        control = self.control
        if internals.is_last_batch(trainer) or control.should_training_stop \
                or control.should_epoch_stop:
            self._end_epoch(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._epoch_ended:  # Lightning ended the epoch on its own (max_time, another callback's stop)
            if not self._epoch_began:
                # A resume from a checkpoint saved at the end of a pass over an iterable data set: Lightning ends that
                # epoch without starting it again (and without a batch); transformers runs it empty, begin and end.
                self.on_train_epoch_start(trainer, pl_module)
            self._end_epoch(trainer, pl_module)

    def _end_step(self, trainer: L.Trainer, pl_module: L.LightningModule, batch_idx: int) -> None:
        if not self._optimizer_event_fired:  # no post-hook (or a step the AMP scaler skipped): fire it here
            self.event("on_optimizer_step")
        self._optimizer_event_fired = False
        state = self.state
        state.global_step += 1
        state.epoch = trainer.current_epoch + (batch_idx + 1) / self._steps_in_epoch
        self._add_step_loss(pl_module)
        self.event("on_step_end")
        self._log_evaluate_save(trainer, pl_module)

    def _end_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_ended = True
        self._epoch_began = False
        self.event("on_epoch_end")
        self._log_evaluate_save(trainer, pl_module)
        if self.control.should_training_stop:
            # At max_steps Lightning stops by itself; setting should_stop there would send it down its "validate when
            # stopping early" path, an evaluation transformers.Trainer never runs.
            if not 0 < trainer.max_steps <= trainer.global_step:
                trainer.should_stop = True
        elif self.control.should_epoch_stop:  # HF breaks out of the epoch: Lightning's loop ends it at this batch
            internals.end_epoch_after_this_batch(trainer)

    def _log_evaluate_save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """transformers' ``_maybe_log_save_evaluate`` at each step's and epoch's end (or a subclass's override)."""
        if self.log_save_evaluate_override is not None:
            self.log_save_evaluate_override()
        else:
            self.log_evaluate_save(trainer, pl_module)

    def log_evaluate_save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Logs, evaluates and saves as the control flags say (transformers' ``_maybe_log_save_evaluate``)."""
        if self.control.should_log and self.state.global_step > self._last_logged:
            self.write_log(self._train_logs(trainer, pl_module), trainer, start_time=self._start_time)
        if self.control.should_evaluate:
            metrics = self._evaluate_step(trainer, pl_module, skip_scheduler=False)
            is_new_best = self.determine_best_metric(metrics)
            if self.checkpoint_settings.save_strategy == "best":
                self.control.should_save = is_new_best
        if self.control.should_save:
            if self.save_checkpoint_override is not None:
                self.save_checkpoint_override()
                self.event("on_save")
            elif self.save_checkpoint(trainer, pl_module):
                self.event("on_save")

    def _evaluate_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                       skip_scheduler: bool) -> dict[str, float]:
        """transformers' ``_evaluate`` in the loop: a subclass's override, else `evaluate_and_schedule`."""
        if self.evaluate_step_override is not None:
            return self.evaluate_step_override(skip_scheduler=skip_scheduler)
        return self.evaluate_and_schedule(trainer, pl_module, skip_scheduler)

    def evaluate_and_schedule(self, trainer: L.Trainer, pl_module: L.LightningModule,
                              skip_scheduler: bool = False) -> dict[str, float]:
        """transformers' ``_evaluate``: evaluates, then steps a metric-driven schedule (``reduce_lr_on_plateau``)."""
        metrics = self._evaluate(trainer)
        if not skip_scheduler:
            self._step_metric_scheduler(pl_module, metrics)
        return metrics

    @staticmethod
    def save_checkpoint(trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """transformers' ``_save_checkpoint``: ``checkpoint-{global_step}`` through the trainer's `HFCheckpoint`
        (False where it has none)."""
        saver = find_saver(trainer)
        if saver is None:
            return False
        saver.save_hf_checkpoint(trainer, pl_module)
        return True

    # ----------------------------------------------------------------------------------------------- end
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log.info("\n\nTraining completed. Do not forget to share your model on huggingface.co/models =)\n\n")
        if self._tr_loss is not None:
            self._total_loss += float(trainer.strategy.reduce(self._tr_loss, reduce_op="mean"))
        self.store_flos(trainer, pl_module)
        steps = self.state.global_step - self._initial_step
        batch = (self._batch_size or 0) * trainer.accumulate_grad_batches * trainer.world_size
        metrics = speed_metrics("train", self._start_time, num_samples=steps * batch, num_steps=steps)
        metrics["total_flos"] = float(self.state.total_flos)
        metrics["train_loss"] = self._total_loss / max(steps, 1)
        self.memory_tracker.stop_stage("train", metrics)
        self.train_metrics = metrics
        # The same dict, as transformers logs it: log() adds `epoch`, and a PrinterCallback pops `total_flos`, in the
        # metrics that train() returns too (so their keys follow the installed transformers').
        self.write_log(metrics, trainer)
        saver = find_saver(trainer)
        if saver is not None:  # HF loads the best model (HFCheckpoint) before on_train_end
            saver.finish_hf_training(trainer, pl_module)
        self.event("on_train_end")
        self._remove_step_hook()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._remove_step_hook()  # the optimizer may train again (a second train()) under another HFFlow

    def _remove_step_hook(self) -> None:
        if self._step_hook is not None:
            self._step_hook.remove()
            self._step_hook = None

    def _end_a_finished_fit(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resuming from a checkpoint of a finished run, Lightning skips the whole fit loop (no on_train_start /
        # on_train_end). transformers still ends training: the final train metrics (no step run: train_loss 0.0),
        # the best model loaded with load_best_model_at_end, on_train_begin and on_train_end for its callbacks.
        # Called when the fit loop returns, before Lightning's teardown (models still on their devices).
        if not self._train_began and internals.fit_loop_done(trainer):
            self.on_train_start(trainer, pl_module)
            self.on_train_end(trainer, pl_module)


def find_flow(trainer: L.Trainer) -> HFFlow | None:
    """The trainer's HFFlow callback, if any."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, HFFlow)), None)


def find_saver(trainer: L.Trainer) -> CheckpointSaver | None:
    """The trainer's checkpoint saver (`HFCheckpoint`, or any callback meeting `CheckpointSaver`), if any."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, CheckpointSaver)), None)


def wrap_trainer_callbacks(callbacks: Iterable[Any], args: TrainingArguments | None = None) -> HFFlow:
    """Runs ``transformers.TrainerCallback`` objects in a plain ``lightning.Trainer``.

    Example:
        ``L.Trainer(callbacks=[wrap_trainer_callbacks([PrinterCallback(), MyCallback()])])`` with an `HFModule`.

    Args:
        callbacks: TrainerCallback instances or classes, run after HF's DefaultFlowCallback in this order.
        args: The TrainingArguments the callbacks see (logging / eval / save schedule); HFFlow's defaults if None.

    Returns:
        The `HFFlow` callback to add to ``lightning.Trainer(callbacks=[...])``.
    """
    return HFFlow(args=args, callbacks=_trainer_callbacks(callbacks, "wrap_trainer_callbacks(callbacks=...)"))


def _trainer_callbacks(callbacks: Iterable[Any], where: str) -> list[Any]:
    """``callbacks`` as a list, refused with the fix named unless each is a ``TrainerCallback`` object or class."""
    callbacks = list(callbacks)
    wrong = [cb for cb in callbacks if not (isinstance(cb, TrainerCallback)
                                            or isinstance(cb, type) and issubclass(cb, TrainerCallback))]
    if wrong:
        raise TypeError(
            f"{where} takes transformers.TrainerCallback objects or classes, got {wrong!r}. In a yaml config write "
            "each as `- class_path: transformers.PrinterCallback` (with `init_args:` where it takes any), not as a "
            "string; add Lightning callbacks to lightning.Trainer(callbacks=[...]) directly.")
    return callbacks


__all__ = ["HFFlow", "TrainerCallback", "find_flow", "find_saver", "wrap_trainer_callbacks"]
