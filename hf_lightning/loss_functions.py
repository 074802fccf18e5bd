"""The functional forms of the losses in `hf_lightning.losses` (``focal_loss``, ``nt_xent_loss``) and
``class_weights_from_labels``, with what every loss shares: ``IGNORE_INDEX``, the argument check and the reduction
that divides by ``num_items_in_batch`` as ``transformers.Trainer`` does. The loss modules call these, as ``torch.nn``
calls ``torch.nn.functional``; `hf_lightning.losses` re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100
Reduction = Literal["mean", "sum", "none"]
NumItems = int | Tensor | None


def _check(ok: bool, owner: str, field: str, value: Any, rule: str) -> None:
    """Raise a ValueError naming the argument and the rule it breaks."""
    if not ok:
        raise ValueError(f"{owner}: {field}={value!r} is invalid; {field} must be {rule}.")


def _reduce(per_item: Tensor, mask: Tensor, reduction: Reduction, num_items_in_batch: NumItems) -> Tensor:
    """Zero the ignored items, then sum / ``num_items_in_batch`` (HF style), or mean / sum / none."""
    per_item = per_item.masked_fill(~mask, 0.0)
    if reduction == "none":
        return per_item
    if num_items_in_batch is not None:
        if torch.is_tensor(num_items_in_batch):  # the count may live on another device
            num_items_in_batch = num_items_in_batch.to(per_item.device)
        return per_item.sum() / num_items_in_batch
    if reduction == "sum":
        return per_item.sum()
    return per_item.sum() / mask.sum()  # NaN when every item is ignored, as torch's cross_entropy


def focal_loss(
    logits: Tensor,
    labels: Tensor,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    reduction: Reduction = "mean",
    num_items_in_batch: NumItems = None,
) -> Tensor:
    """Focal loss (Lin et al. 2017): ``-alpha_t * (1 - p_t) ** gamma * log p_t``.

    Softmax form when ``labels`` has one dim fewer than ``logits`` (``[N, C]`` / ``[N, T, C]`` logits, integer
    labels); sigmoid (binary / multi-label) form when both have the same shape (float 0/1 labels). A float
    ``alpha`` weights the positive class (``1 - alpha`` the negative; softmax form needs C == 2); a sequence gives
    one weight per class. ``gamma=0, alpha=None`` is exactly cross-entropy (softmax) or BCE-with-logits (sigmoid).
    Mean is over non-ignored items (not weight-normalised, unlike ``cross_entropy(weight=...)``).
    """
    mask = labels != ignore_index
    if labels.dim() == logits.dim():  # sigmoid: each logit an independent binary decision
        targets = labels.float().masked_fill(~mask, 0.0)
        log_p_t = -F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
        if alpha is not None and not isinstance(alpha, float | int):
            raise ValueError("focal_loss: alpha must be a float for sigmoid (same-shape labels) logits.")
        alpha_t = None if alpha is None else alpha * targets + (1 - alpha) * (1 - targets)
    elif labels.dim() == logits.dim() - 1:
        num_classes = logits.shape[-1]
        if num_classes < 2:
            raise ValueError("focal_loss: class-id labels need C >= 2 logits; for one logit pass same-shape labels.")
        safe = labels.masked_fill(~mask, 0).unsqueeze(-1)  # any in-range id; masked out below
        log_p_t = F.log_softmax(logits.float(), dim=-1).gather(-1, safe).squeeze(-1)
        alpha_t = None if alpha is None else _class_alpha(alpha, num_classes, logits.device)[safe.squeeze(-1)]
    else:
        raise ValueError(
            f"focal_loss: labels shape {tuple(labels.shape)} does not fit logits {tuple(logits.shape)}; labels must "
            "be [...] (class ids, logits [..., C]) or the same shape as logits (binary / multi-label)."
        )
    loss = -((1.0 - log_p_t.exp()) ** gamma) * log_p_t
    if alpha_t is not None:
        loss = alpha_t * loss
    return _reduce(loss, mask, reduction, num_items_in_batch)


def _class_alpha(alpha: float | Sequence[float] | Tensor, num_classes: int, device: torch.device) -> Tensor:
    """Per-class alpha vector: a float means ``[1 - alpha, alpha]`` (binary), a sequence is used as given."""
    if isinstance(alpha, float | int):
        if num_classes != 2:
            raise ValueError(f"focal_loss: a float alpha needs 2 classes, not {num_classes}; pass a list of weights.")
        alpha = [1.0 - alpha, float(alpha)]
    weights = torch.as_tensor(alpha, dtype=torch.float32, device=device)
    if weights.numel() != num_classes:
        raise ValueError(f"focal_loss: alpha has {weights.numel()} weights but logits have {num_classes} classes.")
    return weights


_WEIGHT_SCHEMES: dict[str, Callable[[Tensor], Tensor]] = {
    # "balanced" weights as in scikit-learn: n_samples / (n_classes * count_c)
    "inverse": lambda counts: counts.sum() / (counts.numel() * counts),
    "sqrt_inverse": lambda counts: torch.sqrt(counts.sum() / (counts.numel() * counts)),
}


def class_weights_from_labels(
    labels: Sequence[int] | Tensor,
    num_classes: int,
    scheme: Literal["inverse", "sqrt_inverse"] = "inverse",
    ignore_index: int = IGNORE_INDEX,
) -> list[float]:
    """Per-class weights from label frequencies, ready for ``WeightedCrossEntropyLoss(class_weights=...)``.

    Args:
        labels: Integer class ids (any shape); ``ignore_index`` entries are skipped.
        num_classes: Number of classes C; ids must be in [0, C).
        scheme: "inverse" (``n / (C * count_c)``, scikit-learn's "balanced") or "sqrt_inverse" (its square root).
        ignore_index: Label value to skip.

    Returns:
        A list of C floats; a perfectly balanced label set gives all ones.
    """
    if scheme not in _WEIGHT_SCHEMES:
        raise ValueError(f"class_weights_from_labels: unknown scheme={scheme!r}; use one of {sorted(_WEIGHT_SCHEMES)}.")
    _check(num_classes >= 1, "class_weights_from_labels", "num_classes", num_classes, ">= 1")
    ids = torch.as_tensor(labels).reshape(-1).long()
    ids = ids[ids != ignore_index]
    if ids.numel() and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(f"class_weights_from_labels: labels must be in [0, num_classes={num_classes}).")
    counts = torch.bincount(ids, minlength=num_classes).double()
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(
            f"class_weights_from_labels: classes {missing} never occur in labels, so an inverse-frequency weight is "
            "undefined; check num_classes or pass class_weights by hand."
        )
    return _WEIGHT_SCHEMES[scheme](counts).tolist()


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5, num_items_in_batch: NumItems = None) -> Tensor:
    """NT-Xent (SimCLR, Chen et al. 2020) over two views ``[N, D]``: each of the 2N embeddings has its other view
    as positive and the remaining 2N - 2 as negatives, scored by cosine similarity / ``temperature``."""
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"nt_xent_loss: z1 and z2 must both be [N, D]; got {tuple(z1.shape)} and {tuple(z2.shape)}.")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))  # no self-pairs
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    per_anchor = F.cross_entropy(sim, positives, reduction="none")  # softmax over 1 positive + 2N - 2 negatives
    return _reduce(per_anchor, torch.ones_like(per_anchor, dtype=torch.bool), "mean", num_items_in_batch)
