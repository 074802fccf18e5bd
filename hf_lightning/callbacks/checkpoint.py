"""HFCheckpoint: transformers.Trainer's checkpoints (folders, rotation, best model, exact resume) on Lightning.

*When* to save is decided by transformers' own ``DefaultFlowCallback`` inside `HFFlow` (``control.should_save``), and
HFFlow calls `HFCheckpoint.save_hf_checkpoint` where transformers' ``_maybe_log_save_evaluate`` saves: after the
step's log and evaluation, before ``on_epoch_end``; it fires ``on_save`` afterwards. At the end of training HFFlow
calls `HFCheckpoint.finish_hf_training` (load the best model, prune) before ``on_train_end``, as transformers does.

Settings: one `CheckpointSettings` (``self.settings``), the ``save_*`` / best-model fields of ``TrainingArguments``;
this callback reads nothing else. An argument left at None takes transformers' default, or, when `HFFlow` was given
the user's ``TrainingArguments`` (``wrap_trainer_callbacks(args=...)``), that value. `HFFlow` builds the
``TrainingArguments`` transformers' callbacks see from its settings and these at ``setup`` (transformers validates the
combination there, e.g. ``load_best_model_at_end`` needs save steps that are a multiple of the eval steps, before
training), and resolves the best metric with its own; a yaml recipe names each field on the component it belongs to.

Resume (``resume_from_checkpoint``) restores the weights at ``setup``, the optimizer, scheduler, scaler and Lightning's
loop position at ``on_fit_start``, skips the batches already seen and restores the random streams at
``on_train_start`` (see `hf_lightning.checkpoint.resume`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from transformers import TrainerState, TrainingArguments
from transformers.trainer import OPTIMIZER_NAME, SCALER_NAME, SCHEDULER_NAME
from transformers.utils import logging as hf_logging

from hf_lightning import lightning_internals as internals
from hf_lightning.callbacks.hf_flow import HFFlow, find_flow
from hf_lightning.checkpoint import folder
from hf_lightning.checkpoint import resume as resuming
from hf_lightning.checkpoint.jit import SigtermRequest
from hf_lightning.optim import trainer_scheduler
from hf_lightning.settings import CheckpointSettings

# transformers.Trainer's messages under its logger: log_level / transformers.logging.set_verbosity_* control them
log = hf_logging.get_logger("transformers.trainer")


@dataclasses.dataclass
class _Resume:
    checkpoint: str
    state: TrainerState
    point: resuming.ResumePoint | None = None
    weights_loaded: bool = False
    rng_pending: bool = False
    skipped: bool = False


class HFCheckpoint(Checkpoint):
    """Writes ``output_dir/checkpoint-{step}/`` folders as transformers.Trainer does, and resumes from them exactly.

    Args:
        output_dir: Folder of the ``checkpoint-*`` folders (HFFlow's default: ``hf_lightning_output``).
        save_strategy: ``no``, ``steps`` (transformers' default), ``epoch`` or ``best`` (save on each new best
            ``metric_for_best_model``).
        save_steps: Save every N optimizer steps with ``steps``; a float < 1 is a ratio of the total (default 500).
        save_total_limit: Keep at most this many checkpoints; the newest and the best are never deleted (default: all).
        save_only_model: Write only the model (no optimizer, scheduler, RNG: such a folder cannot resume exactly).
        save_on_each_node: With several nodes, write the checkpoint on each node's first process (no shared disk).
        load_best_model_at_end: Load the best checkpoint's weights when training ends (default False).
        metric_for_best_model: Metric that defines the best checkpoint (``loss`` -> ``eval_loss``; ``loss`` by
            default with ``load_best_model_at_end``).
        greater_is_better: Whether a larger metric is better (default: not a ``*loss`` metric).
        restore_callback_states_from_checkpoint: On resume, restore the transformers callbacks' states saved in
            ``trainer_state.json`` (e.g. the early-stopping counter); transformers' default is False.
        ignore_data_skip: On resume, restart the current epoch from its first batch instead of skipping the batches
            already trained (default False).
        enable_jit_checkpoint: On SIGTERM (a preemptible cluster, SLURM), write a checkpoint at the end of the current
            optimizer step and stop training cleanly (transformers' just-in-time checkpoint). With several processes
            the ranks agree at each step, so a signal to any one of them stops all at the same step.
        resume_from_checkpoint: Resume the next ``fit`` from this checkpoint folder, or True for the newest one in
            ``output_dir`` (a folder written by transformers.Trainer works too). Read at each ``fit``.
        args: A ``TrainingArguments`` to take every setting above from; explicit arguments override it.
        settings: All the settings above as one `CheckpointSettings` (what ``translate(args).checkpoint`` gives);
            replaces them.

    A setting left at None keeps the value of the flow's ``TrainingArguments`` (transformers' default otherwise).
    """

    def __init__(
        self,
        output_dir: str | None = None,
        save_strategy: Literal["no", "steps", "epoch", "best"] | None = None,
        save_steps: float | None = None,
        save_total_limit: int | None = None,
        save_only_model: bool | None = None,
        save_on_each_node: bool | None = None,
        load_best_model_at_end: bool | None = None,
        metric_for_best_model: str | None = None,
        greater_is_better: bool | None = None,
        restore_callback_states_from_checkpoint: bool | None = None,
        ignore_data_skip: bool | None = None,
        enable_jit_checkpoint: bool | None = None,
        resume_from_checkpoint: bool | str | None = None,
        args: TrainingArguments | None = None,
        settings: CheckpointSettings | None = None,
    ) -> None:
        super().__init__()
        values = {"output_dir": output_dir, "save_strategy": save_strategy, "save_steps": save_steps,
                  "save_total_limit": save_total_limit, "save_only_model": save_only_model,
                  "save_on_each_node": save_on_each_node, "load_best_model_at_end": load_best_model_at_end,
                  "metric_for_best_model": metric_for_best_model, "greater_is_better": greater_is_better,
                  "restore_callback_states_from_checkpoint": restore_callback_states_from_checkpoint,
                  "ignore_data_skip": ignore_data_skip, "enable_jit_checkpoint": enable_jit_checkpoint}
        #: The settings given explicitly (they override a ``TrainingArguments`` given to `HFFlow`).
        self.given_settings = {name: value for name, value in values.items() if value is not None}
        self._has_base = settings is not None or args is not None
        if settings is None:
            settings = self._over(CheckpointSettings.from_args(args) if args is not None else CheckpointSettings())
        self.settings: CheckpointSettings = settings
        self.resume_from_checkpoint = resume_from_checkpoint
        self._flow: HFFlow | None = None
        self._resume: _Resume | None = None
        self._sigterm: SigtermRequest | None = None
        self._jit_step = -1
        self._saved_step: int | None = None  # the global step of the last save (the same on every rank)
        #: set by the HF-style Trainer when a subclass overrides save_model / _save: ``(folder) -> None`` writes each
        #: checkpoint's model files, called on every rank
        self.save_model_override: Callable[[str], None] | None = None
        #: a subclass's ``_load_best_model`` (HF-style Trainer), called instead of loading the best weights here
        self.load_best_override: Callable[[], None] | None = None
        #: a subclass's ``_load_from_checkpoint(folder)``, called instead of loading the resumed weights here
        self.load_resumed_override: Callable[[str], None] | None = None

    def _over(self, base: CheckpointSettings) -> CheckpointSettings:
        """``base`` with the explicitly given settings applied (a new metric re-derives its direction)."""
        given = dict(self.given_settings)
        if "metric_for_best_model" in given and "greater_is_better" not in given:
            given["greater_is_better"] = None
        return base.replace(**given)

    def inherit(self, args: Any) -> None:
        """Takes every setting not given explicitly from the ``TrainingArguments`` `HFFlow` was given (unless this
        callback was built from arguments or settings of its own)."""
        if not self._has_base:
            self.settings = self._over(CheckpointSettings.from_args(args))

    @property
    def flow(self) -> HFFlow:
        """The trainer's `HFFlow` (set at ``setup``)."""
        if self._flow is None:
            raise RuntimeError("HFCheckpoint is not attached to a trainer yet (its setup hook has not run).")
        return self._flow

    # ----------------------------------------------------------------------------------------------- set-up
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        flow = find_flow(trainer)
        if flow is None:
            raise ValueError("HFCheckpoint needs an HFFlow callback: use an HFModule (it adds one) or add "
                             "hf_lightning.callbacks.HFFlow to trainer.callbacks.")
        self._flow = flow
        if flow.checkpoint_settings is not self.settings:  # HFFlow's setup normally ran first (Lightning runs
            flow.prepare(trainer)  # checkpoint callbacks last); it resolves the best metric and transformers' view
        if stage != "fit":
            return
        if trainer.is_global_zero:
            folder.recover_output_dir(self.settings.output_dir)
        trainer.strategy.barrier("hf_checkpoint_setup")
        self._resume = None
        path = folder.resolve_checkpoint(self.settings.output_dir, self.resume_from_checkpoint)
        if path is not None:
            self._start_resume(trainer, path)

    # ----------------------------------------------------------------------------------------------- resume
    def _start_resume(self, trainer: L.Trainer, path: str) -> None:
        flow = self.flow
        state = folder.load_trainer_state(path)
        self._resume = _Resume(path, TrainerState(**dict(state.__dict__)))
        resuming.restore_flow_state(flow, state)
        if self.settings.restore_callback_states_from_checkpoint:
            control = resuming.restore_callback_states(flow.handler, state)
            if control is not None:
                flow.control = control
        if not trainer.strategy.restore_checkpoint_after_setup:
            self._load_resumed_weights(trainer, path)
        log.info(f"Loading model from {path}.")  # transformers' message

    def _load_resumed_weights(self, trainer: L.Trainer, path: str) -> None:
        if self.load_resumed_override is not None:  # transformers' train() calls _load_from_checkpoint here
            self.load_resumed_override(path)
        else:
            resuming.load_model_weights(trainer, path)
        self._resume.weights_loaded = True

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        plan = self._resume
        if plan is None:
            return
        if trainer.ckpt_path:
            raise ValueError(f"Both a Lightning checkpoint (ckpt_path={trainer.ckpt_path}) and "
                             f"resume_from_checkpoint={plan.checkpoint} were given: resume from one of them.")
        if not plan.weights_loaded:
            self._load_resumed_weights(trainer, plan.checkpoint)
        resuming.restore_optimizers(trainer, plan.checkpoint)
        if trainer.train_dataloader is None:  # the batches per epoch are needed: set up the data as Lightning does
            internals.set_up_training_data(trainer)
        plan.point = resuming.resume_point(plan.state.global_step, trainer.num_training_batches,
                                           trainer.accumulate_grad_batches, self.settings.ignore_data_skip)
        if plan.point.global_step > 0:
            resuming.restore_loops(trainer, plan.point)
        if plan.point.batches:
            # The loader skips what was trained now, before Lightning draws the first batch (it reads an iterable
            # data set ahead, before on_train_start).
            resuming.skip_seen_batches(trainer, plan.point.batches)
            internals.restart_training_iterator(trainer)
            plan.skipped = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._watch_sigterm(trainer)
        plan = self._resume
        if internals.restarted_mid_epoch(trainer) and not (plan is not None and plan.skipped):
            resuming.skip_seen_batches(trainer, internals.batches_done_in_epoch(trainer))  # a Lightning .ckpt
        if plan is None or plan.point is None:
            return
        # transformers' compare_trainer_and_checkpoint_args: one warning for the intervals and the per-device batch
        # size that differ; the state keeps the checkpoint's values (transformers loads the whole state), while the
        # run goes on with the new batch size and accumulation (the resume position used them).
        state, lines = self.flow.state, []
        for name in ("logging_steps", "eval_steps", "save_steps"):
            saved, current = getattr(plan.state, name), getattr(state, name)
            if saved is not None and current is not None and saved != current:
                lines.append(f"\n\t{name}: {current} (from args) != {saved} (from trainer_state.json)")
            if saved is not None:  # as transformers, which loads the whole state: the saved value as written (5.0)
                setattr(state, name, saved)
        saved_batch, batch = plan.state.train_batch_size, state.train_batch_size
        if saved_batch is not None and batch is not None and saved_batch != batch:
            lines.append(f"\n\tper_device_train_batch_size: {batch} (from args) != {saved_batch} "
                         "(from trainer_state.json)")
            state.train_batch_size = saved_batch
        if lines:
            log.warning("Warning: The following arguments do not match the ones in the `trainer_state.json` within "
                        "the checkpoint directory: " + "".join(lines))
        point = plan.point  # transformers' lines after its "Running training" block
        log.info(f"  Resuming training from checkpoint with epoch {point.epoch} and global step {point.global_step}")
        if not self.settings.ignore_data_skip:
            log.info(f"  Fast-forwarding the dataloader past {point.epoch} epochs and {point.batches} batches to "
                     "resume from the exact training state.")
        # transformers restores the random streams after drawing the resumed epoch's first batches (mid-epoch) or
        # before creating the epoch's iterator (at an epoch start); the same moments here.
        if plan.point.batches:
            plan.rng_pending = True
        else:
            self._load_rng(trainer, plan)

    def _load_rng(self, trainer: L.Trainer, plan: _Resume) -> None:
        plan.rng_pending = False
        folder.load_rng_state(plan.checkpoint, trainer.global_rank, trainer.world_size)

    # ----------------------------------------------------------------------------------------------- saving
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._resume is not None and self._resume.rng_pending:
            self._load_rng(trainer, self._resume)

    # ----------------------------------------------------------------------------------------------- JIT checkpoint
    def _watch_sigterm(self, trainer: L.Trainer) -> None:
        """Installed at train start, after Lightning's own SIGTERM handler (which would end the run with an error
        at the next batch); Lightning restores the handlers it found when the fit ends."""
        if self.settings.enable_jit_checkpoint:
            self._sigterm = SigtermRequest()
            self._sigterm.install()
            self._jit_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._sigterm is None or trainer.global_step == self._jit_step:
            return  # no JIT checkpointing, or inside an accumulation window: wait for the step to end
        self._jit_step = trainer.global_step
        if not self._sigterm.agreed(trainer.strategy):
            return
        step = self.flow.state.global_step
        log.warning(f"SIGTERM received: saving a checkpoint at step {step} and stopping training.")
        if self._saved_step != step:  # this step's regular save may have just run
            override = self.flow.save_checkpoint_override  # transformers' JIT checkpoint calls _save_checkpoint
            if override is not None:
                override()
            else:
                self.save_hf_checkpoint(trainer, pl_module)
            self.flow.event("on_save")
        self.flow.control.should_training_stop = True
        trainer.should_stop = True
        self._stop_watching()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_watching()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop_watching()

    def _stop_watching(self) -> None:
        if self._sigterm is not None:
            self._sigterm.uninstall()
            self._sigterm = None

    def save_hf_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule | None = None) -> str:
        """Writes ``checkpoint-{global_step}`` now and rotates; every rank must call it.

        `HFFlow` calls it where transformers' ``_maybe_log_save_evaluate`` saves (after the step's log and
        evaluation, when ``control.should_save`` is set) and then fires ``on_save``.

        Returns:
            The checkpoint folder.
        """
        settings = self.settings
        writer = trainer.local_rank == 0 if settings.save_on_each_node else trainer.is_global_zero
        staging = folder.staging_dir(folder.checkpoint_dir(settings.output_dir, self.flow.state.global_step))
        try:
            return self._save_hf_checkpoint(trainer, pl_module, writer)
        except KeyboardInterrupt:  # Ctrl+C while saving: no half-written staging folder left behind
            if writer:
                folder.abandon(staging)
            raise

    def _save_hf_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule | None, writer: bool) -> str:
        flow, strategy = self.flow, trainer.strategy
        settings, state = self.settings, flow.state
        if not state.is_hyper_param_search:  # as transformers: the flos so far go into the saved trainer_state.json
            flow.store_flos(trainer, pl_module or trainer.lightning_module)  # a collective: every rank is here
        final = folder.checkpoint_dir(settings.output_dir, state.global_step)
        staging = folder.staging_dir(final)
        if writer:
            log.info(f"Saving model checkpoint to {final}")
            folder.start_staging(final)
        strategy.barrier("hf_checkpoint_staging")
        save_model = self.save_model_override
        # a collective under sharded strategies: every rank (an overridden save_model gathers what it saves itself)
        weights = strategy.lightning_module_state_dict() if save_model is None else {}
        with_state = not settings.save_only_model and bool(trainer.optimizers)
        optimizer_state = strategy.optimizer_state(trainer.optimizers[0]) if with_state else None
        self._update_best(settings, state)
        # A write that fails (a full disk, most often; torch.save reports it as a RuntimeError) is agreed on by the
        # ranks: none publishes, the staging folder goes, the error says why and which checkpoint to resume from.
        failure: folder.SaveFailure | None = None
        try:
            if with_state:
                folder.save_rng_state(staging, trainer.global_rank, trainer.world_size)
            if save_model is not None:  # every rank, as transformers' _save_checkpoint calls save_model
                save_model(staging)
        except Exception as err:  # noqa: BLE001 - every failed write is agreed on, then re-raised
            failure = folder.SaveFailure.of(err, staging)
        rng_saved = strategy.reduce_boolean_decision(failure is None, all=True)  # also the barrier after the RNG
        if writer and rng_saved:
            try:
                self._write_folder(trainer, staging, weights, optimizer_state)
                folder.publish(staging, final)
            except Exception as err:  # noqa: BLE001 - torch.save reports ENOSPC as RuntimeError
                failure = folder.SaveFailure.of(err, staging)
        if not strategy.reduce_boolean_decision(rng_saved and failure is None, all=True):
            if writer:
                folder.abandon(staging)  # frees the space; resume never sees a half-written checkpoint
            error = folder.save_failed(final, failure)
            if failure is not None:
                raise error from failure.error
            raise error
        if writer:
            folder.rotate(settings.output_dir, settings.save_total_limit, state.best_model_checkpoint)
        strategy.barrier("hf_checkpoint_saved")
        self._saved_step = state.global_step
        return final

    @staticmethod
    def _update_best(settings: CheckpointSettings, state: TrainerState) -> None:
        # transformers' _save_checkpoint: best_model_checkpoint names a folder that exists (or is being written).
        if settings.tracks_best_checkpoint and state.best_global_step:
            best = folder.checkpoint_dir(settings.output_dir, state.best_global_step)
            if state.best_global_step == state.global_step or os.path.exists(best):
                state.best_model_checkpoint = best

    def _write_folder(self, trainer: L.Trainer, staging: str, weights: dict[str, torch.Tensor],
                      optimizer_state: dict[str, Any] | None) -> None:
        flow = self.flow
        if self.save_model_override is None:  # else the overridden save_model wrote the model's files
            model, prefix = resuming.inner_model(trainer.lightning_module)
            model_weights = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
            folder.save_model_files(model, staging, model_weights,
                                    getattr(trainer.lightning_module, "tokenizer_to_save", None))
        if optimizer_state is not None:
            folder.save_torch(optimizer_state, os.path.join(staging, OPTIMIZER_NAME))
            scheduler = trainer_scheduler(trainer)
            if scheduler is not None:
                folder.save_torch(scheduler.state_dict(), os.path.join(staging, SCHEDULER_NAME))
            scaler = getattr(trainer.precision_plugin, "scaler", None)
            if scaler is not None:
                folder.save_torch(scaler.state_dict(), os.path.join(staging, SCALER_NAME))
        flow.state.stateful_callbacks = flow.callback_states()
        folder.save_trainer_state(flow.state, staging)
        folder.save_training_args(flow.args, staging)

    # ----------------------------------------------------------------------------------------------- end
    def load_best(self, trainer: L.Trainer) -> None:
        """Loads ``best_model_checkpoint``'s weights into the trained model (transformers' ``_load_best_model``)."""
        state = self.flow.state
        log.info(f"Loading best model from {state.best_model_checkpoint} (score: {state.best_metric}).")
        resuming.load_model_weights(trainer, state.best_model_checkpoint, best=True)

    def finish_hf_training(self, trainer: L.Trainer, pl_module: L.LightningModule | None = None) -> None:
        """transformers' end of training: load the best weights, prune to the best with ``save_total_limit=1``.

        `HFFlow` calls it after the final log and before ``on_train_end``, where transformers does it.
        """
        settings, state = self.settings, self.flow.state
        best = state.best_model_checkpoint
        if settings.load_best_model_at_end and best is not None:
            if self.load_best_override is not None:
                self.load_best_override()
            else:
                self.load_best(trainer)
        writer = trainer.local_rank == 0 if settings.save_on_each_node else trainer.is_global_zero
        if writer and best is not None and settings.save_total_limit == 1 and os.path.isdir(best):
            folder.keep_only_best(settings.output_dir, best)
        trainer.strategy.barrier("hf_checkpoint_end")


__all__ = ["HFCheckpoint"]
