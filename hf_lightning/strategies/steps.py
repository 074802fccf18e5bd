"""Per-step helpers that depend on the strategy: gradient clipping, collective forwards, the fp16 scaler state."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy, Strategy


def _with_grads(module: L.LightningModule, optimizer: torch.optim.Optimizer | None) -> list[torch.Tensor]:
    # Model order, as transformers.Trainer's clip_grad_norm_(model.parameters()): the same summation order gives
    # bit-identical norms (optimizer-group order differs in the last bits, which Adam can amplify). Walking the module
    # tree costs about 0.1 ms, a step of a small model's 1%: the list is kept on the optimizer for the module it was
    # taken from (the HF-style Trainer keeps its optimizer across train() calls, each with a new module).
    cached = getattr(optimizer, "_hfl_model_parameters", None)
    if cached is not None and cached[0]() is module:
        params = cached[1]
    else:
        params = list(module.parameters())
        if optimizer is not None:
            optimizer._hfl_model_parameters = (weakref.ref(module), params)
    return [p for p in params if p.grad is not None]


def _clip_local(module: L.LightningModule, optimizer: torch.optim.Optimizer | None, max_norm: float) -> torch.Tensor:
    """DDP / single device: gradients are whole on every rank. FSDP2: DTensor gradients; the norm is made whole."""
    params = _with_grads(module, optimizer)
    if not params:
        return torch.zeros((), device=module.device)
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if hasattr(norm, "full_tensor"):  # a DTensor (FSDP2): partial norms of the shards, reduced across ranks
        norm = norm.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def _clip_fsdp1(module: L.LightningModule, optimizer: Any, max_norm: float) -> torch.Tensor:
    """FSDP1: the root wrapper's ``clip_grad_norm_`` reduces the norm of the flat shards across ranks."""
    return module.trainer.strategy.model.clip_grad_norm_(max_norm if max_norm > 0 else math.inf)


def _clip_deepspeed(module: L.LightningModule, optimizer: Any, max_norm: float) -> torch.Tensor:
    """DeepSpeed: the engine clips to its ``gradient_clipping`` inside its step; its norm is filled in afterwards."""
    return getattr(module.trainer.strategy, "grad_norm", torch.full((), float("nan")))


#: Strategy class -> clipping (the most derived registered class of the running strategy wins).
_CLIPPERS: dict[type, Callable[[L.LightningModule, Any, float], torch.Tensor]] = {
    FSDPStrategy: _clip_fsdp1, DeepSpeedStrategy: _clip_deepspeed,
}


def clip_grad_norm(module: L.LightningModule, optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Returns the total gradient norm before clipping and clips to ``max_norm`` when it is > 0.

    Runs after the precision plugin has unscaled fp16 gradients (Lightning calls ``configure_gradient_clipping`` from
    its ``_after_closure``). Under DeepSpeed the engine clips during its step and the returned tensor receives the
    engine's norm after that step (read it after ``optimizer.step``, as the logging does).
    """
    strategy = module._trainer.strategy if module._trainer is not None else None
    return clipper_for(strategy)(module, getattr(optimizer, "optimizer", optimizer), max_norm)


def clipper_for(strategy: Strategy | None) -> Callable[[L.LightningModule, Any, float], torch.Tensor]:
    """The clipping function of a strategy: the most derived class registered in `_CLIPPERS`, else `_clip_local`."""
    return next((_CLIPPERS[cls] for cls in type(strategy).__mro__ if cls in _CLIPPERS), _clip_local)


def forward_is_collective(strategy: Strategy) -> bool:
    """Whether each forward pass gathers sharded parameters across ranks (FSDP, FSDP2, DeepSpeed ZeRO-3), so every
    rank must run the same number of forwards (evaluation evens out ranks with fewer batches)."""
    if isinstance(strategy, DeepSpeedStrategy):
        return bool(strategy.zero_stage_3)
    return isinstance(strategy, (FSDPStrategy, ModelParallelStrategy))


def generation_is_synced(trainer: L.Trainer | None) -> bool:
    """``synced_gpus`` for ``generate``: every rank keeps stepping until all are done when the forward gathers
    sharded parameters on several processes. Decided from the strategy in use (Seq2SeqTrainer reads transformers'
    global DeepSpeed flag, which Lightning's DeepSpeed strategy never sets)."""
    return trainer is not None and trainer.world_size > 1 and forward_is_collective(trainer.strategy)


def scaler_state(trainer: L.Trainer) -> dict[str, Any] | None:
    """The fp16 loss scaler's ``state_dict`` (transformers' ``scaler.pt``); None without one (bf16 / fp32, or
    DeepSpeed, whose engine keeps its own scaler). Covers Lightning's ``MixedPrecision`` and FSDP's sharded scaler."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return scaler.state_dict() if scaler is not None else None


def load_scaler_state(trainer: L.Trainer, state: dict[str, Any]) -> bool:
    """Restores a `scaler_state`; returns False when this run has no scaler to restore into."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is None:
        return False
    scaler.load_state_dict(state)
    return True
