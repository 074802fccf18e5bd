"""The one place that knows about distributed back-ends (DDP / FSDP / DeepSpeed / model parallel).

Modules and callbacks call these helpers instead of testing for a back-end themselves.
"""

from __future__ import annotations

import torch
import lightning as L


def _with_grads(module: L.LightningModule) -> list[torch.Tensor]:
    # Model order, as transformers.Trainer's clip_grad_norm_(model.parameters()): the same summation order gives
    # bit-identical norms (optimizer-group order differs in the last bits, which Adam can amplify).
    return [p for p in module.parameters() if p.grad is not None]


def clip_grad_norm(module: L.LightningModule, optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Returns the total gradient norm before clipping and clips to ``max_norm`` when it is > 0.

    Runs after the precision plugin has unscaled fp16 gradients (Lightning calls ``configure_gradient_clipping`` from
    its ``_after_closure``). Sharded parameters (FSDP2 DTensors) are handled by torch's ``clip_grad_norm_``.
    """
    params = _with_grads(module)
    if not params:
        return torch.zeros((), device=module.device)
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in params])
