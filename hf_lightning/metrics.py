"""Evaluation metrics by name (torchmetrics, accumulated on the device and synced across ranks).

A metric name in ``model.metrics`` becomes ``eval_<name>`` (``test_<name>`` in test). Predictions are ``argmax`` of the
logits for classification and the squeezed logits for regression (``num_labels == 1``); positions labelled -100 are
ignored.
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


def build_metrics(names: list[str] | None, num_labels: int | None) -> torchmetrics.MetricCollection | None:
    """A `MetricCollection` of the named metrics, or None when no names are given."""
    if not names:
        return None
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"Unknown metric(s) {unknown} in model.metrics. Known: {sorted(METRICS)}.")
    if num_labels is None:
        raise ValueError("model.metrics needs the number of labels: set model.num_labels (or link it from the data).")
    return torchmetrics.MetricCollection({n: METRICS[n](num_labels) for n in names})


def metric_inputs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattens (logits, labels) into (predictions, targets) for the collection, dropping -100 positions."""
    if logits.shape[-1] == 1 and labels.dtype.is_floating_point:  # regression
        return logits.reshape(-1).float(), labels.reshape(-1).float()
    preds = logits.argmax(-1).reshape(-1)
    target = labels.reshape(-1)
    keep = target != -100
    return preds[keep], target[keep]
