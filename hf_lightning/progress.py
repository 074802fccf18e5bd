"""transformers.Trainer's steps-and-epochs arithmetic, in one place: every component that counts batches per epoch,
optimizer updates per epoch, total steps or a resume position uses these functions (the HF-style Trainer sizing the
run, `HFFlow` filling ``TrainerState``, the resume of a checkpoint, the batch sampler's length)."""

from __future__ import annotations

import math


def batches_per_epoch(num_samples: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches of ``batch_size`` in ``num_samples`` (a short last batch counts unless ``drop_last``)."""
    return num_samples // batch_size if drop_last else math.ceil(num_samples / batch_size)


def updates_per_epoch(num_batches: int, accumulate: int) -> int:
    """transformers' ``num_update_steps_per_epoch``: optimizer steps per epoch, ``max(ceil(batches / GA), 1)`` (a
    short last accumulation window still steps)."""
    return max(math.ceil(num_batches / accumulate), 1)


def total_updates(num_train_epochs: float, updates: int) -> int:
    """transformers' ``max_steps`` from epochs: ``ceil(epochs x updates per epoch)`` (fractional epochs allowed)."""
    return math.ceil(num_train_epochs * updates)


def epochs_for(max_steps: int, updates: int) -> int:
    """transformers' ``num_train_epochs`` when ``max_steps`` decides: ``ceil(max_steps / updates per epoch)``."""
    return math.ceil(max_steps / updates)


def position(global_step: int, num_batches: float, accumulate: int) -> tuple[int, int]:
    """(epoch, optimizer steps into it) of ``global_step``, as transformers' ``_init_training_state`` resumes;
    an iterable data set (``num_batches`` infinite) is one endless epoch."""
    if math.isinf(num_batches):
        return 0, global_step
    epoch, steps = divmod(global_step, updates_per_epoch(int(num_batches), accumulate))
    return epoch, steps


__all__ = ["batches_per_epoch", "epochs_for", "position", "total_updates", "updates_per_epoch"]
