"""Named torchmetrics (hf_lightning/metrics.py): `MetricBuffer` feeds a collection in blocks of batches and ends with
the values that updating it batch by batch gives, for every kind of input the evaluation loop passes."""

from __future__ import annotations

import pytest
import torch

from hf_lightning.metrics import MetricBuffer, build_metrics


def _batches(kind: str, n: int = 7) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        size = 3 + i % 4  # ragged batches
        if kind == "single":
            logits, labels = torch.randn(size, 4, generator=g), torch.randint(0, 4, (size,), generator=g)
            labels[0] = -100  # an ignored example
        elif kind == "tokens":  # token classification: (batch, sequence, classes), padded positions -100
            length = 5 + i % 3
            logits, labels = torch.randn(size, length, 4, generator=g), torch.randint(0, 4, (size, length), generator=g)
            labels[:, -2:] = -100
        elif kind == "indices":  # what a preprocess_logits_for_metrics returning argmax hands over
            logits = torch.randn(size, 6, 4, generator=g).argmax(-1)
            labels = torch.randint(0, 4, (size, 6), generator=g)
            labels[:, 0] = -100
        elif kind == "regression":
            logits, labels = torch.randn(size, 1, generator=g), torch.randn(size, generator=g)
        else:  # multi-label: multi-hot float targets
            logits, labels = torch.randn(size, 3, generator=g), torch.randint(0, 2, (size, 3), generator=g).float()
            if kind == "multi-mixed" and i % 2 == 0:  # scores already in [0, 1]: torchmetrics thresholds them as
                logits = torch.rand(size, 3, generator=g)  # they are, where the others get a sigmoid first
        out.append((logits, labels))
    return out


def _per_batch(collection, batches):
    """The reference: one update per batch, -100 positions removed."""
    for logits, labels in batches:
        if kind_of(logits, labels) == "regression":
            collection.update(logits.reshape(-1), labels.reshape(-1))
        elif kind_of(logits, labels) == "multi":
            collection.update(logits, labels.long())
        else:
            preds = logits if logits.shape == labels.shape else logits.argmax(-1)
            preds, target = preds.reshape(-1), labels.reshape(-1)
            collection.update(preds[target != -100], target[target != -100])
    return {k: float(v) for k, v in collection.compute().items()}


def kind_of(logits, labels):
    if logits.shape[-1] == 1 and labels.dtype.is_floating_point:
        return "regression"
    return "multi" if labels.shape == logits.shape and labels.dtype.is_floating_point else "single"


@pytest.mark.parametrize(("kind", "names", "num_labels", "multi"), [
    ("single", ["accuracy", "f1", "matthews_corrcoef"], 4, False),
    ("tokens", ["accuracy", "precision", "recall"], 4, False),
    ("indices", ["accuracy", "f1"], 4, False),
    ("regression", ["mse", "mae", "pearson", "spearman"], 1, False),
    ("multi", ["accuracy", "exact_match", "f1"], 3, True),
    ("multi-mixed", ["accuracy", "exact_match", "f1"], 3, True),
])
@pytest.mark.parametrize("max_elements", [1, 20, 1 << 20])
def test_buffered_updates_give_the_per_batch_values(kind, names, num_labels, multi, max_elements):
    batches = _batches(kind)
    expected = _per_batch(build_metrics(names, num_labels, multi), batches)
    collection = build_metrics(names, num_labels, multi)
    buffer = MetricBuffer(collection, max_elements=max_elements)
    for logits, labels in batches:
        buffer.add(logits, labels)
    buffer.flush()
    got = {k: float(v) for k, v in collection.compute().items()}
    assert buffer.batches == len(batches)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key


def test_the_collection_is_updated_once_per_block(monkeypatch):
    collection = build_metrics(["accuracy"], 4)
    calls = []
    original = type(collection).update
    monkeypatch.setattr(type(collection), "update", lambda self, *a, **k: (calls.append(a[0].numel()),
                                                                            original(self, *a, **k)))
    buffer = MetricBuffer(collection, max_elements=10)
    for logits, labels in _batches("single", n=6):  # 3, 4, 5, 6, 3, 4 examples
        buffer.add(logits, labels)
    assert len(calls) == 2  # after 3 + 4 + 5 = 12 and 6 + 3 + 4 = 13 predictions
    buffer.flush()
    assert len(calls) == 2  # nothing was left waiting
    assert sum(calls) == 25 - 6  # every example but the six labelled -100


def test_class_indices_from_preprocess_logits_are_scored_as_they_are():
    """A ``preprocess_logits_for_metrics`` that returns ``logits.argmax(-1)`` hands over class indices with the labels'
    shape: they are the predictions (taking argmax again would score one number per batch)."""
    preds = torch.tensor([[1, 2, 0], [3, 3, 1]])
    labels = torch.tensor([[1, 0, 0], [3, -100, 2]])
    collection = build_metrics(["accuracy"], 4)
    buffer = MetricBuffer(collection)
    buffer.add(preds, labels)
    buffer.flush()
    assert float(collection.compute()["accuracy"]) == pytest.approx(3 / 5)  # 1, 0 right of 3; 3 right, 2 wrong


def test_metrics_without_a_number_of_labels_name_both_fixes():
    """From the command line the number of labels comes from the label column: a misspelt column leaves none, and
    the message points there as well as at model.num_labels."""
    with pytest.raises(ValueError, match=r"set model\.num_labels, or check that data\.label_column names a column"):
        build_metrics(["accuracy"], None)
