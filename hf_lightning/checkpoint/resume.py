"""Exact resume from a ``transformers.Trainer``-format checkpoint folder on Lightning's loops.

transformers stores only ``global_step``; its loop derives where to continue (``Trainer._init_training_state``):
``epochs_trained = global_step // updates_per_epoch`` and, unless ``ignore_data_skip``, the batches to skip in that
epoch, ``(global_step % updates_per_epoch) * gradient_accumulation_steps``. `resume_point` computes the same numbers;
`lightning_loop_state` writes them as the progress counters Lightning 2.x keeps in a ``.ckpt`` saved at
``on_train_batch_end`` of that batch, and `restore_loops` loads them with ``fit_loop.load_state_dict``. Lightning then
continues exactly as after its own mid-epoch restart (same ``batch_idx``, same accumulation windows, same
``is_last_batch``); the data loader skips the batches already seen (``TrainLoader.skip_first_batches``), so no sample
is drawn twice.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.fabric.utilities.warnings import PossibleUserWarning
from transformers import TrainerControl, TrainerState
from transformers.trainer import OPTIMIZER_NAME, SCALER_NAME, SCHEDULER_NAME
from transformers.trainer_callback import CallbackHandler, ExportableState
from transformers.utils import logging as hf_logging

from hf_lightning import lightning_internals as internals
from hf_lightning import progress
from hf_lightning.checkpoint import folder as ckpt_folder
from hf_lightning.modules.loading import uncompiled
from hf_lightning.optim import trainer_scheduler
from hf_lightning.strategies import forward_is_collective

if TYPE_CHECKING:
    from hf_lightning.callbacks.hf_flow import HFFlow

# transformers.Trainer's messages under its logger: log_level / transformers.logging.set_verbosity_* control them
log = hf_logging.get_logger("transformers.trainer")


@dataclass(frozen=True)
class ResumePoint:
    """Where training continues after a checkpoint, in transformers' terms.

    Attributes:
        global_step: Optimizer steps already taken.
        epoch: Epochs fully trained (the epoch training continues in).
        batches: Batches of that epoch already trained (skipped on resume; 0 at an epoch start).
        epoch_steps: Optimizer steps already taken in that epoch.
    """

    global_step: int
    epoch: int
    batches: int
    epoch_steps: int


def resume_point(global_step: int, num_batches: float, accumulate: int, ignore_data_skip: bool = False) -> ResumePoint:
    """transformers' ``_init_training_state`` arithmetic.

    Args:
        global_step: The checkpoint's ``global_step``.
        num_batches: Training batches per epoch on this rank (``inf`` for an iterable data set).
        accumulate: Gradient-accumulation steps.
        ignore_data_skip: Start the epoch from its first batch instead of skipping the ones already seen.
    """
    epoch, steps = progress.position(global_step, num_batches, accumulate)
    if ignore_data_skip:
        steps = 0
    return ResumePoint(global_step, epoch, steps * accumulate, steps)


def _set(progress: dict[str, Any], **values: int) -> None:
    for key, value in values.items():
        progress[key] = value


def _fill(tracker: dict[str, Any], total: int, current: int) -> None:
    """Sets every counter of a Lightning ``_Progress``-style dict (``total`` / ``current``)."""
    _set(tracker["total"], **dict.fromkeys(tracker["total"], total))
    _set(tracker["current"], **dict.fromkeys(tracker["current"], current))


def lightning_loop_state(template: dict[str, Any], point: ResumePoint, num_batches: int) -> dict[str, Any]:
    """The ``fit_loop`` state Lightning would have saved at this point.

    ``template`` is ``trainer.fit_loop.state_dict()`` of the fresh loop, so every key of the installed Lightning
    version is present. At an epoch start nothing is in flight: all epoch counters equal ``point.epoch`` and Lightning
    starts that epoch normally (``on_train_epoch_start`` included). Inside an epoch the counters are those of a
    checkpoint written at ``on_train_batch_end`` of batch ``point.batches - 1`` (batch ``completed`` one behind), which
    Lightning restores as a mid-epoch restart.

    Args:
        template: ``trainer.fit_loop.state_dict()`` before training.
        point: From `resume_point`.
        num_batches: Training batches per epoch on this rank.
    """
    state = copy.deepcopy(template)
    gs, epoch, k, s = point.global_step, point.epoch, point.batches, point.epoch_steps
    mid = k > 0
    before = epoch * num_batches if not math.isinf(num_batches) else 0
    _fill(state["epoch_loop.batch_progress"], before + k, k)
    state["epoch_loop.batch_progress"]["is_last_batch"] = False
    _fill(state["epoch_loop.scheduler_progress"], gs, s)
    optim = state["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]
    _fill(optim["step"], gs, s)
    _fill(optim["zero_grad"], gs, s)
    state["epoch_loop.state_dict"]["_batches_that_stepped"] = gs - 1 if mid else gs
    _fill(state["epoch_progress"], epoch, epoch)
    if mid:
        batches = state["epoch_loop.batch_progress"]
        batches["total"]["completed"] = before + k - 1
        batches["current"]["completed"] = k - 1
        for tracker in ("total", "current"):
            state["epoch_progress"][tracker].update(ready=epoch + 1, started=epoch + 1)
    return state


def restore_loops(trainer: L.Trainer, point: ResumePoint) -> None:
    """Loads the loop progress of `point` into ``trainer.fit_loop`` (before ``fit_loop.run``)."""
    quiet_mid_epoch_resume_warning()  # inside an epoch Lightning warns, also when ignore_data_skip skips nothing
    num_batches = trainer.num_training_batches
    template = internals.fit_loop_state(trainer)
    internals.load_fit_loop_state(trainer, lightning_loop_state(template, point, num_batches))


def skip_seen_batches(trainer: L.Trainer, batches: int) -> None:
    """Makes the resumed epoch start after its first ``batches`` batches (``TrainLoader.skip_first_batches``)."""
    if batches <= 0:
        return
    loader = trainer.train_dataloader
    skip = getattr(loader, "skip_first_batches", None)
    if skip is None:
        raise ValueError(
            f"Resuming inside an epoch needs a train dataloader that can skip the {batches} batches already trained "
            f"(hf_lightning's HFDataModule provides one); got {type(loader).__name__}. Resume from a checkpoint saved "
            f"at an epoch end, or set ignore_data_skip=True to restart the epoch from its first batch."
        )
    skip(batches)
    quiet_mid_epoch_resume_warning()


def quiet_mid_epoch_resume_warning() -> None:
    """Silences Lightning's warning that a loader without ``state_dict`` cannot resume inside an epoch: the loader
    skips the seen batches, or (``ignore_data_skip``) restarts the epoch on purpose; transformers warns of neither."""
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended",
                            category=PossibleUserWarning)


def restore_flow_state(flow: HFFlow, state: TrainerState) -> None:
    """Loads a checkpoint's ``TrainerState`` into HFFlow (transformers' ``_init_training_state`` checks included)."""
    if state.best_model_checkpoint is not None and not os.path.isdir(state.best_model_checkpoint):
        log.warning(
            f"The best checkpoint {state.best_model_checkpoint} recorded in the resumed state does not exist anymore. "
            "Ignoring it for this run."
        )
        state.best_model_checkpoint = None
    # transformers restarts the running loss sum at each train() call: train_loss covers this run's steps only.
    flow.load_state_dict({"trainer_state": dict(state.__dict__), "total_loss": 0.0})


def restore_callback_states(handler: CallbackHandler, state: TrainerState) -> TrainerControl | None:
    """transformers' ``Trainer._load_callback_state``: rebuilds the ExportableState callbacks from the checkpoint.

    Returns:
        The restored ``TrainerControl`` (None when the checkpoint holds none).
    """
    control = None
    present = [*handler.callbacks]
    missing = []
    for name, data in (state.stateful_callbacks or {}).items():
        saved = data if isinstance(data, list) else [data]
        if name == TrainerControl.__name__:
            control = TrainerControl.from_state(saved[0])
            continue
        matching = [cb for cb in present if type(cb).__name__ == name and isinstance(cb, ExportableState)]
        if not matching:
            missing.append(name)
            continue
        restored = [type(callback).from_state(entry) for callback, entry in zip(matching, saved)]
        for callback in matching[:len(restored)]:  # as transformers: one instance out per restored one
            handler.remove_callback(callback)
        for callback in restored:
            handler.add_callback(callback)
    if missing:
        log.warning("Checkpoint included callbacks not included in current configuration. Ignoring. "
                    f"({', '.join(missing)})")
    return control


def restore_optimizers(trainer: L.Trainer, checkpoint: str) -> None:
    """Loads ``optimizer.pt``, ``scheduler.pt`` and ``scaler.pt`` (each with ``weights_only=True``) when present."""
    optimizer_file = os.path.join(checkpoint, OPTIMIZER_NAME)
    scheduler_file = os.path.join(checkpoint, SCHEDULER_NAME)
    if not (os.path.isfile(optimizer_file) and os.path.isfile(scheduler_file)):
        # transformers resumes with fresh optimizer and scheduler in this case (e.g. save_only_model folders).
        log.warning(f"{checkpoint} has no {OPTIMIZER_NAME} / {SCHEDULER_NAME}: the optimizer "
                    "and learning-rate schedule restart from scratch.")
        return
    optimizer_state = ckpt_folder.load_torch(optimizer_file)
    trainer.strategy.load_optimizer_state_dict({"optimizer_states": [optimizer_state]})
    scheduler = trainer_scheduler(trainer)
    if scheduler is not None:
        scheduler.load_state_dict(ckpt_folder.load_torch(scheduler_file))
    scaler_file = os.path.join(checkpoint, SCALER_NAME)
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is not None and os.path.isfile(scaler_file):
        scaler.load_state_dict(ckpt_folder.load_torch(scaler_file))


def inner_model(pl_module: L.LightningModule) -> tuple[torch.nn.Module, str]:
    """The model a checkpoint folder holds and its key prefix in the Lightning state dict (``HFModule.model``)."""
    inner = getattr(pl_module, "model", None)
    if not isinstance(inner, torch.nn.Module):
        return pl_module, ""
    if uncompiled(inner) is not inner:  # torch.compile's wrapper: the keys carry it
        return uncompiled(inner), "model._orig_mod."
    return inner, "model."


def load_model_weights(trainer: L.Trainer, checkpoint: str, best: bool = False) -> None:
    """Loads ``model.safetensors`` (or a sharded / ``.bin`` layout; a peft adapter folder into a ``PeftModel``)
    into the Lightning module's model.

    The weights are keyed like the inner model (``HFModule.model``); they are loaded through
    ``trainer.strategy.load_model_state_dict`` so strategies that shard parameters can place them.
    """
    model, prefix = inner_model(trainer.lightning_module)
    place = None
    if forward_is_collective(trainer.strategy):  # sharded parameters: the strategy places each shard
        def place(weights: dict[str, torch.Tensor]) -> None:
            trainer.strategy.load_model_state_dict({"state_dict": {prefix + k: v for k, v in weights.items()}},
                                                   strict=False)
    load_weights_into(model, checkpoint, place, best=best)


_PEFT_NOT_SAVED = ("The intermediate checkpoints of PEFT may not be saved correctly, consider using a custom callback "
                   "to save adapter_model.bin in corresponding saving folders. Check some examples here: "
                   "https://github.com/huggingface/peft/issues/96")


def load_weights_into(model: torch.nn.Module, checkpoint: str,
                      place: Callable[[dict[str, torch.Tensor]], None] | None = None, best: bool = False) -> None:
    """Loads a checkpoint folder's weights into ``model`` as transformers does: a peft model's adapters (`_load_adapters`),
    else the weights (missing and unexpected keys warned) through the model's own ``load_state_dict`` (an override, a
    buffer whose size changes), or through ``place``. ``best``: transformers' ``_load_best_model`` rather than a
    resume."""
    if ckpt_folder.is_peft_model(model):
        _load_adapters(model, checkpoint, best)
        return
    weights = ckpt_folder.load_weights(checkpoint)
    expected = set(model.state_dict())
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})  # save_pretrained drops tied copies
    missing = sorted(expected - set(weights) - tied)
    unexpected = sorted(set(weights) - expected)
    if missing:
        log.warning(f"There were missing keys in the checkpoint model loaded: {missing}.")
    if unexpected:
        log.warning(f"There were unexpected keys in the checkpoint model loaded: {unexpected}.")
    if place is not None:
        place(weights)
    else:
        model.load_state_dict(weights, strict=False)


def _load_adapters(model: Any, checkpoint: str, best: bool) -> None:
    """A peft model's adapters from a checkpoint folder, as transformers loads them.

    A resume (``_load_from_checkpoint``): with adapters in sub-folders (one not named ``default``, or several), each
    into the adapter of its name (the top-level one into ``default``), trainable where it is the active adapter, which
    stays active; else the top-level adapter into the active one. The best model (``_load_best_model``): the top-level
    adapter into the active one, as peft loads it by default (not trainable: the model is left in eval mode); without
    one, a warning and the model as it is.
    """
    active = model.active_adapters[0] if hasattr(model, "active_adapters") else model.active_adapter
    top = ckpt_folder.has_adapter_weights(checkpoint)
    if best:
        if top:
            model.load_adapter(checkpoint, active)
        else:
            log.warning(_PEFT_NOT_SAVED)
        return
    subdirs = ckpt_folder.adapter_subdirs(checkpoint)
    training = model.training  # peft puts the model in eval mode for an adapter loaded as not trainable; transformers
    # then trains in train mode (its training_step calls model.train()), so the mode is kept here
    if subdirs:
        if top:
            model.load_adapter(checkpoint, "default", is_trainable=active == "default")
        for name in subdirs:
            model.load_adapter(os.path.join(checkpoint, name), name, is_trainable=name == active)
        model.set_adapter(active)
        model.train(training)
    elif top:
        model.load_adapter(checkpoint, active, is_trainable=True)
    else:
        log.warning(_PEFT_NOT_SAVED)
