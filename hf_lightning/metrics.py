"""Evaluation metrics by name (torchmetrics, accumulated on the device and synced across ranks).

A metric name in ``model.metrics`` becomes ``eval_<name>`` (``test_<name>`` in test). Predictions are ``argmax`` of the
logits for classification, the squeezed logits for regression (``num_labels == 1``), and for multi-label models
(``problem_type="multi_label_classification"``) each label's sigmoid against a threshold (0.5 by default); positions
labelled -100 are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchmetrics
from torchmetrics import classification as tmc
from torchmetrics import regression as tmr


def _multiclass(cls: type, **extra: Any) -> Callable[[int], torchmetrics.Metric]:
    def build(num_labels: int) -> torchmetrics.Metric:
        return cls(num_classes=num_labels, ignore_index=-100, **extra)

    return build


#: name -> factory(num_labels). Classification metrics are macro-averaged unless the name says otherwise.
METRICS: dict[str, Callable[[int], torchmetrics.Metric]] = {
    "accuracy": _multiclass(tmc.MulticlassAccuracy, average="micro"),
    "balanced_accuracy": _multiclass(tmc.MulticlassAccuracy, average="macro"),
    "f1": _multiclass(tmc.MulticlassF1Score, average="macro"),
    "f1_micro": _multiclass(tmc.MulticlassF1Score, average="micro"),
    "precision": _multiclass(tmc.MulticlassPrecision, average="macro"),
    "recall": _multiclass(tmc.MulticlassRecall, average="macro"),
    "matthews_corrcoef": _multiclass(tmc.MulticlassMatthewsCorrCoef),
    "mse": lambda n: tmr.MeanSquaredError(),
    "mae": lambda n: tmr.MeanAbsoluteError(),
    "pearson": lambda n: tmr.PearsonCorrCoef(),
    "spearman": lambda n: tmr.SpearmanCorrCoef(),
}


def _multilabel(cls: type, **extra: Any) -> Callable[[int, float], torchmetrics.Metric]:
    def build(num_labels: int, threshold: float) -> torchmetrics.Metric:
        return cls(num_labels=num_labels, threshold=threshold, **extra)

    return build


#: name -> factory(num_labels, threshold) for multi-label models (several labels per example).
MULTILABEL_METRICS: dict[str, Callable[[int, float], torchmetrics.Metric]] = {
    "accuracy": _multilabel(tmc.MultilabelAccuracy, average="micro"),  # of every (example, label) decision
    "exact_match": _multilabel(tmc.MultilabelExactMatch),  # every label of the example right
    "f1": _multilabel(tmc.MultilabelF1Score, average="macro"),
    "f1_micro": _multilabel(tmc.MultilabelF1Score, average="micro"),
    "precision": _multilabel(tmc.MultilabelPrecision, average="macro"),
    "recall": _multilabel(tmc.MultilabelRecall, average="macro"),
}


def build_metrics(names: list[str] | None, num_labels: int | None, multi_label: bool = False,
                  threshold: float = 0.5) -> torchmetrics.MetricCollection | None:
    """A `MetricCollection` of the named metrics, or None when no names are given.

    Args:
        names: Metric names (``METRICS``, or ``MULTILABEL_METRICS`` for a multi-label model).
        num_labels: Number of classes / labels.
        multi_label: Whether each example carries several labels (multi-hot targets, sigmoid outputs).
        threshold: Probability above which a label counts as predicted (multi-label only).
    """
    if not names:
        return None
    known = MULTILABEL_METRICS if multi_label else METRICS
    unknown = [n for n in names if n not in known]
    if unknown:
        kind = "multi-label " if multi_label else ""
        raise ValueError(f"Unknown {kind}metric(s) {unknown} in model.metrics. Known: {sorted(known)}.")
    if num_labels is None:
        raise ValueError("model.metrics needs the number of labels, and none is known: set model.num_labels, or check "
                         "that data.label_column names a column of the training data (the command line takes the "
                         "number of labels from that column).")
    if multi_label:
        return torchmetrics.MetricCollection({n: MULTILABEL_METRICS[n](num_labels, threshold) for n in names})
    return torchmetrics.MetricCollection({n: METRICS[n](num_labels) for n in names})


def metric_inputs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's (predictions, targets) for the collection, flattened, -100 positions still in (`drop_ignored`
    removes them). Nothing here waits for the device: predictions are ``argmax`` / casts, computed where they are."""
    if logits.shape[-1] == 1 and labels.dtype.is_floating_point:  # regression
        return logits.reshape(-1).float(), labels.reshape(-1).float()
    if labels.shape == logits.shape and labels.dtype.is_floating_point:  # multi-label: multi-hot targets
        # torchmetrics applies a sigmoid to a whole update's inputs when any value lies outside [0, 1]: decided here
        # per batch (on the device), as when each batch was an update of its own, so blocks change nothing
        scores = logits.float()
        return torch.where(((scores < 0) | (scores > 1)).any(), scores.sigmoid(), scores), labels.long()
    if labels.shape == logits.shape and not logits.dtype.is_floating_point:
        return logits.reshape(-1), labels.reshape(-1)  # class indices already (preprocess_logits_for_metrics' argmax)
    return logits.argmax(-1).reshape(-1), labels.reshape(-1)


def drop_ignored(preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drops the positions labelled -100 from single-label classification inputs (a boolean index: the one place the
    host waits for the device, once per `MetricBuffer` flush)."""
    if preds.dtype.is_floating_point:  # regression and multi-label inputs: nothing to drop
        return preds, target
    keep = target != -100
    return preds[keep], target[keep]


class MetricBuffer:
    """Feeds a `MetricCollection` in blocks of batches instead of batch by batch.

    Each torchmetrics update checks its inputs (``torch.unique``: the host waits for the device) and runs a few
    small kernels; for a small model that costs as much as the forward. The buffer keeps each batch's predictions
    and targets on their device (argmax indices, not logits) and updates the collection once ``max_elements``
    predictions are waiting, and at the end of the pass (`flush`). The sums the metrics keep are the same either way.
    """

    def __init__(self, metrics: torchmetrics.MetricCollection, max_elements: int = 1 << 20) -> None:
        self.metrics = metrics
        self.max_elements = max_elements
        self._waiting: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._elements = 0
        self.batches = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        preds, target = metric_inputs(logits, labels)
        self._waiting.append((preds, target))
        self._elements += preds.numel()
        self.batches += 1
        if self._elements >= self.max_elements:
            self.flush()

    def flush(self) -> None:
        """Updates the collection with everything waiting."""
        if not self._waiting:
            return
        preds, target = (torch.cat(parts) for parts in zip(*self._waiting))
        self._waiting, self._elements = [], 0
        self.metrics.update(*drop_ignored(preds, target))
