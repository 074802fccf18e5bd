"""Mixed precision as transformers.Trainer runs it: autocast around the model's forward only.

transformers relies on accelerate, which wraps ``model.forward`` in autocast and converts its floating outputs to
float32; what a Trainer does with those outputs (the label smoother, ``compute_loss_func``, an overridden
``compute_loss``'s own arithmetic, ``prediction_step``) runs in float32 without autocast. Lightning's precision plugin
enters autocast around the whole ``training_step`` / ``validation_step``. `forward_only_autocast`, entered inside that
region, narrows it to the model's forward, so losses computed outside the model get transformers' numbers (a label
smoother on bfloat16 logits under CPU autocast differs by about 3e-3 otherwise).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from accelerate.utils import convert_to_fp32
from torch import nn


@contextlib.contextmanager
def forward_only_autocast(models: Sequence[nn.Module], device_type: str) -> Iterator[None]:
    """Inside an autocast region of ``device_type``: each model's forward keeps autocast (same dtype) and returns its
    floating outputs in float32; everything else in the block runs without autocast. With no model, the whole block
    stays under autocast, with accelerate's weight-cast cache on. A no-op where autocast is off (full precision,
    DeepSpeed's own bfloat16, a model cast to half precision)."""
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    dtype = torch.get_autocast_dtype(device_type)
    if not models:  # the region stays; with accelerate's cast cache (Lightning enters autocast without it), which a
        with torch.autocast(device_type, dtype=dtype, cache_enabled=True):  # reentrant checkpoint's recompute records
            yield
        return
    patched = [(model, model.__dict__.get("forward")) for model in models]
    for model, _ in patched:
        model.forward = _autocast_forward(model.forward, device_type, dtype)
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        for model, own in patched:  # an instance attribute (a compiled module's forward) is put back
            if own is not None:
                model.forward = own
            else:
                del model.forward


def _autocast_forward(forward: Callable[..., Any], device_type: str, dtype: torch.dtype) -> Callable[..., Any]:
    @functools.wraps(forward)
    def autocast_forward(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=dtype):
            outputs = forward(*args, **kwargs)
        return convert_to_fp32(outputs)

    return autocast_forward


__all__ = ["forward_only_autocast"]
