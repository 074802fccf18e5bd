"""Evaluation outputs gathered across ranks: each rank evaluates a contiguous block of the data set; its predictions,
labels, inputs and losses are joined in rank order, so metrics see every sample once and predictions come back in
data set order. Tensors (`gather_across_ranks`, padded with -100 to the largest shape, as transformers pads across
processes) or Python objects (`gather_objects_across_ranks`, ``eval_use_gather_object``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from transformers.trainer_pt_utils import nested_concat


def _pad_value(dtype: np.dtype) -> Any:
    """-100, transformers' padding index, where the dtype can hold it."""
    return -100 if np.issubdtype(dtype, np.signedinteger) or np.issubdtype(dtype, np.floating) else 0


def _gather_leaf(module: Any, local: np.ndarray | None, dtype: np.dtype, ndim: int,
                 join: Callable[[list[Any]], Any] = np.concatenate) -> np.ndarray:
    """One array from every rank: padded to the largest shape, gathered, cut to each rank's rows, joined."""
    device = module.device
    if local is None:
        local = np.zeros((0,) * ndim, dtype=dtype)
    shapes = module.all_gather(torch.tensor(local.shape, dtype=torch.int64, device=device)).reshape(-1, ndim)
    target = tuple(int(n) for n in shapes.max(dim=0).values)
    padded = np.full(target, _pad_value(dtype), dtype=dtype)
    padded[tuple(slice(0, n) for n in local.shape)] = local
    tensor = torch.from_numpy(padded.view(np.uint8) if dtype == np.bool_ else padded)  # gloo has no bool
    gathered = module.all_gather(tensor.to(device)).cpu().numpy()
    rows = [gathered[rank, : int(shapes[rank, 0])] for rank in range(gathered.shape[0])]
    out = join(rows)
    return out.view(np.bool_) if dtype == np.bool_ else out


def gather_across_ranks(module: Any, value: Any, join: Callable[[list[Any]], Any] = np.concatenate) -> Any:
    """Concatenates each rank's (nested) arrays along the first axis in rank order; ranks without data give none.

    Arrays are padded to the largest shape with -100 before the collective (as transformers pads across processes), and
    each rank's rows are cut back to its own count afterwards, so nothing is duplicated. Ragged trailing dimensions
    stay padded with -100, as ``nested_concat`` leaves them. Every rank must call it, in the same order.

    Args:
        module: The LightningModule (its ``all_gather`` and the strategy's ``broadcast`` carry the data).
        value: None, an array or a nested tuple / list / dict of arrays.
        join: Joins the ranks' rows (a list in rank order) into one array: concatenated, or put back into a stream's
            order (`hf_lightning.data.samplers.interleave`).

    Returns:
        The same structure with every rank's rows, or None when no rank has data.
    """
    strategy = module.trainer.strategy
    holders = module.all_gather(torch.tensor(int(value is not None), device=module.device)).reshape(-1)
    if not bool(holders.any()):
        return None
    leaves, spec = tree_flatten(value) if value is not None else ([], None)
    leaves = [np.atleast_1d(np.asarray(leaf)) for leaf in leaves]
    layout = (spec, [(leaf.dtype, leaf.ndim) for leaf in leaves]) if value is not None else None
    spec, kinds = strategy.broadcast(layout, src=int(holders.nonzero()[0]))
    gathered = [_gather_leaf(module, leaves[i] if leaves else None, dtype, ndim, join)
                for i, (dtype, ndim) in enumerate(kinds)]
    return tree_unflatten(gathered, spec)


def gather_objects_across_ranks(value: Any, order: Callable[[list[Any]], list[Any]] | None = None) -> Any:
    """``eval_use_gather_object``: every rank's value sent as a Python object (``all_gather_object``), then joined in
    rank order with transformers' ``nested_concat`` (arrays along the first axis, trailing dimensions padded with
    -100); ranks without data give none. Every rank must call it, in the same order. ``order`` puts the ranks' rows
    back into a stream's order first (rows that are lists or arrays: one row per sample).
    """
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, value)
    present = [part for part in parts if part is not None]
    if not present:
        return None
    if order is not None:
        return _reordered(present, order)
    joined = present[0]
    for part in present[1:]:
        joined = nested_concat(joined, part, padding_index=-100)
    return joined


def _reordered(parts: list[Any], order: Callable[[list[Any]], Any]) -> Any:
    """The ranks' values joined by ``order``, leaf by leaf: a tuple / dict (a model's several outputs), or a list of
    arrays, is a structure whose arrays each hold one row per sample; an array, or a list of anything else, is the
    rows themselves."""
    first = parts[0]
    structure = isinstance(first, (tuple, dict)) or (
        isinstance(first, list) and first and all(isinstance(x, (np.ndarray, torch.Tensor)) for x in first))
    if not structure:
        return order(parts)
    if isinstance(first, dict):
        return {key: _reordered([part[key] for part in parts], order) for key in first}
    return type(first)(_reordered([part[i] for part in parts], order) for i in range(len(first)))


__all__ = ["gather_across_ranks", "gather_objects_across_ranks"]
