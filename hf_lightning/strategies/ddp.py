"""DDP: ``ddp_*`` TrainingArguments fields -> Lightning ``DDPStrategy`` keywords."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from torch import nn


def _seconds(value: Any) -> timedelta:
    return timedelta(seconds=int(value))


#: TrainingArguments field -> (Lightning strategy keyword, conversion). The first two reach every strategy.
_PROCESS_GROUP_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "ddp_backend": ("process_group_backend", str),
    "ddp_timeout": ("timeout", _seconds),
}
_DDP_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "ddp_find_unused_parameters": ("find_unused_parameters", bool),
    "ddp_bucket_cap_mb": ("bucket_cap_mb", int),
    "ddp_broadcast_buffers": ("broadcast_buffers", bool),
    "ddp_static_graph": ("static_graph", bool),
}


def _fields(args: Any, table: dict[str, tuple[str, Callable[[Any], Any]]]) -> dict[str, Any]:
    return {kw: convert(getattr(args, name)) for name, (kw, convert) in table.items() if getattr(args, name) is not None}


def ddp_kwargs(args: Any, model: nn.Module | None = None) -> dict[str, Any]:
    """``DDPStrategy`` keywords from the ``ddp_*`` fields, with transformers' ``find_unused_parameters`` default.

    transformers: the field when set; for a ``PreTrainedModel``, False under activation checkpointing, else True;
    True for any other module.
    """
    kwargs = {**_fields(args, _PROCESS_GROUP_FIELDS), **_fields(args, _DDP_FIELDS)}
    if "find_unused_parameters" not in kwargs:
        checkpointing = bool(getattr(model, "is_activation_checkpointing", False) or args.activation_checkpointing)
        is_hf = hasattr(model, "is_activation_checkpointing")
        kwargs["find_unused_parameters"] = not checkpointing if is_hf else True
    return kwargs
