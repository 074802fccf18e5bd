"""accelerate's process-wide state around ``TrainingArguments``: one process's view under Lightning's launcher, and the
state kept usable for a ``transformers.Trainer`` in the same process.

``transformers.TrainingArguments.__post_init__`` sets up its device through accelerate, and that starts by clearing
accelerate's global ``AcceleratorState``; a ``transformers.Trainer`` re-creates it when it builds its ``Accelerator``.
hf_lightning builds no ``Accelerator`` (Lightning owns the device), so without these two helpers a
``transformers.Trainer`` built earlier in the process (a notebook comparing the two, a port done side by side) would
fail at its next step with "AcceleratorState object has no attribute distributed_type".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState, PartialState


@contextlib.contextmanager
def one_process_view() -> Iterator[None]:
    """Hides the variables of Lightning's own launcher while ``TrainingArguments`` sets up its device.

    ``Trainer(devices=2)`` without torchrun starts each process with ``LOCAL_RANK`` and ``WORLD_SIZE`` but no ``RANK``
    and joins the process group itself, later. ``TrainingArguments.__post_init__`` would build accelerate's
    multi-process state from those variables (and fail with "RANK expected", or change the thread count); in such a
    process Lightning owns the ranks, so the arguments describe one process. torchrun and srun are left alone.
    """
    hidden = {}
    if "LOCAL_RANK" in os.environ and "RANK" not in os.environ:
        hidden = {name: os.environ.pop(name) for name in ("LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
                  if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(hidden)


@contextlib.contextmanager
def accelerate_state_kept() -> Iterator[None]:
    """Around building a ``TrainingArguments``: the accelerator state that existed before is put back if the device
    set-up cleared it (same process, so the same values)."""
    saved = dict(AcceleratorState._shared_state)  # accelerate keeps its singleton state in this class-level dict
    try:
        yield
    finally:
        if saved and not AcceleratorState._shared_state:
            AcceleratorState._shared_state.update(saved)


def ensure_accelerate_state(args: Any) -> None:
    """What building a ``transformers.Trainer`` leaves behind: an initialised accelerator state (an ``Accelerator``
    with the arguments' mixed precision, as transformers builds one), when an ``Accelerator`` was built in this
    process before (accelerate's ``GradientState`` outlives the reset) and the user's own
    ``transformers.TrainingArguments`` cleared its state. A process that never built one is left alone. Only a
    courtesy to other objects in the process: hf_lightning does not use it, so a failure to build it is not an error
    here."""
    if AcceleratorState._shared_state or not PartialState._shared_state or not GradientState._shared_state:
        return
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
    try:
        Accelerator(mixed_precision=precision, cpu=bool(args.use_cpu))
    except (ValueError, RuntimeError, ImportError):  # e.g. fp16 where accelerate cannot scale gradients
        return


__all__ = ["accelerate_state_kept", "ensure_accelerate_state", "one_process_view"]
