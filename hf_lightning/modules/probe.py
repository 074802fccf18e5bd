"""Whether a module's ``compute_loss`` normalises by ``num_items_in_batch``, found out on one batch, leaving no trace.

transformers decides it from the model's ``forward`` signature (any ``**kwargs``); hf_lightning evaluates the loss
twice in eval mode with two counts instead (docs/parity.md, "Deliberate differences" 1), and keeps transformers' rule
where the answer is not clear-cut. The two forwards must not
change what training then sees: `untouched` puts the model's buffers (a forward may update or replace them) and the
random streams back; a compiled model runs them eagerly (no extra compilation).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn


def _random_streams() -> tuple[Any, ...]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) random generators."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return random.getstate(), np.random.get_state(), torch.random.get_rng_state(), cuda


def _restore_random_streams(streams: tuple[Any, ...]) -> None:
    python, numpy, cpu, cuda = streams
    random.setstate(python)
    np.random.set_state(numpy)
    torch.random.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Runs the block in eval mode without gradients, then restores the model's mode, buffers and the random streams."""
    was_training = model.training
    buffers = dict(model.named_buffers())
    saved = {name: buffer.detach().clone() for name, buffer in buffers.items()}
    streams = _random_streams()
    model.eval()  # no dropout: identical forwards
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, buffer in buffers.items():
                owner_name, _, leaf = name.rpartition(".")
                model.get_submodule(owner_name)._buffers[leaf] = buffer  # the object a forward may have replaced
                buffer.copy_(saved[name])  # the values it may have changed in place
        _restore_random_streams(streams)


def loss_scales_with_num_items(module: Any, inputs: dict[str, Any]) -> bool | None:
    """Whether ``module.compute_loss`` divides by ``num_items_in_batch``: True when its value halves as the count
    doubles, False when the count changes nothing; None when it is neither exactly (a loss with a term the count does
    not divide, such as a mixture-of-experts router loss or a regulariser; a loss that draws random numbers; a
    ``compute_loss`` that fails without gradients): the caller then follows transformers' rule.

    A compiled model runs these two forwards eagerly: compiling an eval-mode, no-grad graph here (TorchDynamo guards
    on both) would add a whole compilation to the first step that training never uses."""
    try:
        with untouched(module.model), torch.compiler.set_stance("force_eager"):
            device = module.device
            one = float(module.compute_loss(module.model, dict(inputs), num_items_in_batch=torch.tensor(1.0, device=device)))
            two = float(module.compute_loss(module.model, dict(inputs), num_items_in_batch=torch.tensor(2.0, device=device)))
    except Exception:  # noqa: BLE001 - training then calls it the way transformers does and reports its own error
        return None
    if not (math.isfinite(one) and math.isfinite(two)) or one == 0:
        return None
    if math.isclose(one, 2 * two, rel_tol=1e-3):
        return True
    if math.isclose(one, two, rel_tol=1e-5):
        return False
    return None


__all__ = ["loss_scales_with_num_items", "untouched"]
