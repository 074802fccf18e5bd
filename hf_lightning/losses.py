"""Losses to plug into ``compute_loss`` or a yaml recipe (``class_path: hf_lightning.losses.FocalLoss``).

Every token/sample loss honours ``ignore_index`` (default -100, as in ``transformers``) and takes an optional
``num_items_in_batch`` in ``forward``: when given, the loss is the *sum* over non-ignored items divided by it, which
is how ``transformers.Trainer`` normalises a loss over a whole gradient-accumulation window; otherwise it is the
mean over this batch's non-ignored items.

The functional forms (``focal_loss``, ``nt_xent_loss``, ``class_weights_from_labels``) and the shared reduction are in
`hf_lightning.loss_functions`; they are importable from here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import instantiate_class
from torch import Tensor, nn
from transformers.trainer_pt_utils import LabelSmoother

from hf_lightning.loss_functions import (
    IGNORE_INDEX,
    NumItems,
    Reduction,
    _check,
    _reduce,
    class_weights_from_labels,
    focal_loss,
    nt_xent_loss,
)


def _shift(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Causal-LM shift: position t predicts token t + 1 (as ``transformers``' ``ForCausalLMLoss``)."""
    return logits[..., :-1, :], labels[..., 1:]


class LabelSmoothingLoss(nn.Module):
    """Label-smoothed cross-entropy: ``(1 - eps) * nll + eps * mean_k(-log p_k)`` over non-ignored positions.

    Delegates to ``transformers.trainer_pt_utils.LabelSmoother`` so the numbers equal ``transformers.Trainer``'s
    ``label_smoothing_factor``.

    Args:
        epsilon: Smoothing factor in [0, 1); 0 gives plain cross-entropy.
        ignore_index: Label value excluded from the loss.
        shift_labels: Shift logits/labels by one position, for causal language models.
    """

    def __init__(self, epsilon: float = 0.1, ignore_index: int = IGNORE_INDEX, shift_labels: bool = False) -> None:
        super().__init__()
        _check(0.0 <= epsilon <= 1.0, "LabelSmoothingLoss", "epsilon", epsilon, "in [0, 1]")
        self.epsilon, self.ignore_index, self.shift_labels = epsilon, ignore_index, shift_labels
        self._smoother = LabelSmoother(epsilon=epsilon, ignore_index=ignore_index)

    def forward(
        self, logits: Tensor | Mapping[str, Any], labels: Tensor, num_items_in_batch: NumItems = None
    ) -> Tensor:
        """Loss of ``logits`` ``[..., C]`` (or a model output holding them) against integer ``labels``."""
        output = {"logits": logits} if torch.is_tensor(logits) else logits  # LabelSmoother reads ["logits"] or [0]
        return self._smoother(output, labels, shift_labels=self.shift_labels, num_items_in_batch=num_items_in_batch)


class FocalLoss(nn.Module):
    """Focal loss module; see :func:`focal_loss`.

    Args:
        gamma: Focusing exponent >= 0 (0 = cross-entropy).
        alpha: None, a float in [0, 1] weighting the positive class, or one non-negative weight per class.
        ignore_index: Label value excluded from the loss.
        reduction: "mean" (over non-ignored items), "sum" or "none".
        shift_labels: Shift logits/labels by one position, for causal language models.
    """

    def __init__(
        self, gamma: float = 2.0, alpha: float | list[float] | None = None, ignore_index: int = IGNORE_INDEX,
        reduction: Reduction = "mean", shift_labels: bool = False,
    ) -> None:
        super().__init__()
        _check(gamma >= 0, "FocalLoss", "gamma", gamma, ">= 0")
        if isinstance(alpha, float | int):
            _check(0.0 <= alpha <= 1.0, "FocalLoss", "alpha", alpha, "in [0, 1] when a float")
        elif alpha is not None:
            _check(len(alpha) > 0 and min(alpha) >= 0, "FocalLoss", "alpha", alpha, "a non-empty list of values >= 0")
        _check(reduction in ("mean", "sum", "none"), "FocalLoss", "reduction", reduction, "'mean', 'sum' or 'none'")
        self.gamma, self.alpha, self.ignore_index, self.reduction = gamma, alpha, ignore_index, reduction
        self.shift_labels = shift_labels

    def forward(self, logits: Tensor, labels: Tensor, num_items_in_batch: NumItems = None) -> Tensor:
        """Focal loss of ``logits`` against ``labels`` (shapes as in :func:`focal_loss`)."""
        if self.shift_labels:
            logits, labels = _shift(logits, labels)
        args = (self.gamma, self.alpha, self.ignore_index, self.reduction, num_items_in_batch)
        return focal_loss(logits, labels, *args)


class WeightedCrossEntropyLoss(nn.Module):
    """Cross-entropy with per-class weights (``torch.nn.functional.cross_entropy(weight=...)``).

    Without ``num_items_in_batch`` the mean is torch's weighted mean (divided by the summed weights of the
    non-ignored targets); with it, the weighted sum is divided by ``num_items_in_batch`` (as ``transformers``'
    ``fixed_cross_entropy``).

    Args:
        class_weights: One weight >= 0 per class (see :func:`class_weights_from_labels`).
        ignore_index: Label value excluded from the loss.
        label_smoothing: Smoothing in [0, 1), passed to torch.
        shift_labels: Shift logits/labels by one position, for causal language models.
    """

    def __init__(
        self, class_weights: list[float], ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0,
        shift_labels: bool = False,
    ) -> None:
        super().__init__()
        ok = len(class_weights) > 0 and min(class_weights) >= 0
        _check(ok, "WeightedCrossEntropyLoss", "class_weights", class_weights, "a non-empty list of weights >= 0")
        ok = 0.0 <= label_smoothing < 1.0
        _check(ok, "WeightedCrossEntropyLoss", "label_smoothing", label_smoothing, "in [0, 1)")
        self.ignore_index, self.label_smoothing, self.shift_labels = ignore_index, label_smoothing, shift_labels
        # not persistent: the weights are configuration (init_args), not learned state
        self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32), persistent=False)

    def forward(self, logits: Tensor, labels: Tensor, num_items_in_batch: NumItems = None) -> Tensor:
        """Weighted cross-entropy of ``logits`` ``[..., C]`` against integer ``labels`` ``[...]``."""
        if self.shift_labels:
            logits, labels = _shift(logits, labels)
        num_classes = logits.shape[-1]
        if num_classes != self.class_weights.numel():
            raise ValueError(
                f"WeightedCrossEntropyLoss: class_weights has {self.class_weights.numel()} entries but logits have "
                f"{num_classes} classes; pass one weight per class."
            )
        loss = F.cross_entropy(
            logits.reshape(-1, num_classes).float(), labels.reshape(-1), weight=self.class_weights,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
            reduction="mean" if num_items_in_batch is None else "sum",
        )
        if torch.is_tensor(num_items_in_batch):  # the count may live on another device
            num_items_in_batch = num_items_in_batch.to(loss.device)
        return loss if num_items_in_batch is None else loss / num_items_in_batch


class NTXentLoss(nn.Module):
    """NT-Xent contrastive loss module; see :func:`nt_xent_loss`.

    Args:
        temperature: Softmax temperature > 0.
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        _check(temperature > 0, "NTXentLoss", "temperature", temperature, "> 0")
        self.temperature = temperature

    def forward(self, z1: Tensor, z2: Tensor, num_items_in_batch: NumItems = None) -> Tensor:
        """Loss of two views ``z1``, ``z2`` (``[N, D]`` each, row i of both from the same example)."""
        return nt_xent_loss(z1, z2, self.temperature, num_items_in_batch)


class DistillationLoss(nn.Module):
    """Knowledge distillation (Hinton et al. 2015):
    ``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * hard_loss``.

    The ``T^2`` factor keeps soft-target gradients about the same size for any temperature. Positions whose label
    is ``ignore_index`` are left out of the KL term too (token-level logits ``[N, T, C]``). The teacher logits are
    detached: they are a fixed target.

    Args:
        temperature: Softening temperature T > 0.
        alpha: Weight of the soft (teacher) term in [0, 1].
        ignore_index: Label value excluded from both terms.
        shift_labels: Shift logits/labels by one position, for causal language models.
    """

    def __init__(
        self, temperature: float = 2.0, alpha: float = 0.5, ignore_index: int = IGNORE_INDEX, shift_labels: bool = False
    ) -> None:
        super().__init__()
        _check(temperature > 0, "DistillationLoss", "temperature", temperature, "> 0")
        _check(0.0 <= alpha <= 1.0, "DistillationLoss", "alpha", alpha, "in [0, 1]")
        self.temperature, self.alpha = temperature, alpha
        self.ignore_index, self.shift_labels = ignore_index, shift_labels

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None,
        hard_loss: Tensor | None = None, num_items_in_batch: NumItems = None,
    ) -> Tensor:
        """Distillation loss; the hard term is ``hard_loss`` if given, else cross-entropy against ``labels``."""
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"DistillationLoss: student_logits {tuple(student_logits.shape)} and teacher_logits "
                f"{tuple(teacher_logits.shape)} must have the same shape."
            )
        if labels is None and hard_loss is None and self.alpha < 1.0:
            raise ValueError("DistillationLoss: pass labels or hard_loss, or set alpha=1.0 for a soft-only loss.")
        if labels is not None and labels.shape != student_logits.shape[:-1]:
            raise ValueError(f"DistillationLoss: labels {tuple(labels.shape)} must be logits' shape without C.")
        if labels is not None and self.shift_labels:  # causal LM: position t predicts token t + 1
            student_logits, labels = _shift(student_logits, labels)
            teacher_logits = teacher_logits[..., :-1, :]
        mask = torch.ones(student_logits.shape[:-1], dtype=torch.bool, device=student_logits.device)
        if labels is not None:
            mask = labels != self.ignore_index
        t = self.temperature
        log_s = F.log_softmax(student_logits.float() / t, dim=-1)
        log_t = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
        kl = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(-1)  # KL(teacher || student) per item
        soft = _reduce(kl, mask, "mean", num_items_in_batch) * t**2
        if self.alpha == 1.0:
            return soft
        if hard_loss is None:
            ce = F.cross_entropy(
                student_logits.float().reshape(-1, student_logits.shape[-1]),
                labels.reshape(-1), ignore_index=self.ignore_index, reduction="none",
            )
            hard_loss = _reduce(ce, mask.reshape(-1), "mean", num_items_in_batch)
        return self.alpha * soft + (1.0 - self.alpha) * hard_loss


def _check_task_losses(owner: str, losses: Mapping[str, Tensor], known: Sequence[str]) -> None:
    unknown = [name for name in losses if name not in known]
    if not losses or unknown:
        raise ValueError(f"{owner}: losses must be a non-empty dict over the tasks {list(known)}; unknown: {unknown}.")


class MultiTaskLoss(nn.Module):
    """Fixed weighted sum of named task losses: ``sum_i weights[i] * losses[i]``.

    Args:
        weights: Task name -> weight >= 0. ``forward`` sums the tasks present in its dict (a batch may hold a
            subset of the tasks); a name not in ``weights`` is an error.
    """

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__()
        ok = len(weights) > 0 and all(w >= 0 for w in weights.values())
        _check(ok, "MultiTaskLoss", "weights", weights, "a non-empty dict of task name -> weight >= 0")
        self.weights = dict(weights)

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        """Weighted sum of the already-reduced task ``losses``."""
        _check_task_losses("MultiTaskLoss", losses, list(self.weights))
        return sum(self.weights[name] * loss for name, loss in losses.items())


class UncertaintyWeightedLoss(nn.Module):
    """Learned homoscedastic-uncertainty weighting (Kendall et al. 2018): ``sum_i exp(-s_i) * L_i + s_i``.

    ``s_i`` (log variance of task i, initialised to 0) live in the ``log_vars`` parameter, so they train with the
    model (keep them out of weight decay) and are saved in its ``state_dict`` and checkpoints. At the optimum
    ``exp(-s_i) = 1 / L_i``: a task with a larger loss gets a smaller weight.

    Args:
        task_names: Names of the tasks, in the order of ``log_vars``.
    """

    def __init__(self, task_names: list[str]) -> None:
        super().__init__()
        ok = len(task_names) > 0 and len(set(task_names)) == len(task_names)
        _check(ok, "UncertaintyWeightedLoss", "task_names", task_names, "a non-empty list of distinct names")
        self.task_names = list(task_names)
        self.log_vars = nn.Parameter(torch.zeros(len(task_names)))

    def task_weights(self) -> dict[str, float]:
        """Current weights ``exp(-s_i)`` per task, e.g. for logging."""
        return dict(zip(self.task_names, torch.exp(-self.log_vars.detach()).tolist(), strict=True))

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        """Uncertainty-weighted sum of the task ``losses`` present in the dict."""
        _check_task_losses("UncertaintyWeightedLoss", losses, self.task_names)
        s = {name: self.log_vars[i] for i, name in enumerate(self.task_names)}
        return sum(torch.exp(-s[name]) * loss + s[name] for name, loss in losses.items())


LOSSES: dict[str, type[nn.Module]] = {
    "label_smoothing": LabelSmoothingLoss,
    "focal": FocalLoss,
    "weighted_ce": WeightedCrossEntropyLoss,
    "ntxent": NTXentLoss,
    "distillation": DistillationLoss,
    "multitask": MultiTaskLoss,
    "uncertainty": UncertaintyWeightedLoss,
}


def build_loss(spec: str | Mapping[str, Any] | nn.Module) -> nn.Module:
    """Build a loss from a short name, a dict, or pass a ready module through.

    Args:
        spec: A name from ``LOSSES`` (``"focal"``); a dict ``{"name": "focal", "init_args": {...}}`` or
            ``{"class_path": "hf_lightning.losses.FocalLoss", "init_args": {...}}`` (the LightningCLI form; any
            importable ``nn.Module`` works); or an ``nn.Module``, returned as is.

    Returns:
        The loss module.
    """
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise TypeError(f"build_loss: expected a name, a dict or an nn.Module, got {type(spec).__name__}.")
    extra = set(spec) - {"name", "class_path", "init_args"}
    if extra or ("name" in spec) == ("class_path" in spec):
        raise ValueError(f"build_loss: the dict needs 'name' or 'class_path', and 'init_args'; got {sorted(spec)}.")
    init_args = dict(spec.get("init_args") or {})
    path = spec.get("class_path") or spec["name"]
    if "." not in path:
        if path not in LOSSES:
            raise ValueError(f"build_loss: unknown loss {path!r}; known names: {sorted(LOSSES)}.")
        path = f"{LOSSES[path].__module__}.{LOSSES[path].__qualname__}"
    try:
        loss = instantiate_class((), {"class_path": path, "init_args": init_args})  # Lightning's class_path loader
    except (ImportError, AttributeError) as err:
        raise ValueError(f"build_loss: cannot import class_path {path!r}: {err}") from err
    except TypeError as err:
        raise ValueError(f"build_loss: bad init_args {init_args} for {path}: {err}") from err
    if not isinstance(loss, nn.Module):
        raise TypeError(f"build_loss: {path} built a {type(loss).__name__}, not a torch.nn.Module.")
    return loss


__all__ = [
    "IGNORE_INDEX", "LOSSES", "DistillationLoss", "FocalLoss", "LabelSmoothingLoss", "MultiTaskLoss", "NTXentLoss",
    "UncertaintyWeightedLoss", "WeightedCrossEntropyLoss", "build_loss", "class_weights_from_labels", "focal_loss",
    "nt_xent_loss",
]
