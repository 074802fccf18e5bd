"""Runs transformers.Trainer and hf_lightning.Trainer side by side on the same model, data and seed."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import transformers

import hf_lightning

#: Keys of timings (compared by key only): speed metrics and transformers' model_preparation_time.
SPEED = ("_runtime", "_per_second", "_model_preparation_time")


@dataclass
class Run:
    weights: dict[str, torch.Tensor]
    log_history: list[dict[str, Any]]
    train_loss: float
    global_step: int
    eval_metrics: dict[str, float] | None
    predictions: Any
    trainer: Any


def strip_speed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.endswith(SPEED)} for r in records]


def run(
    trainer_cls: type, model_fn: Callable[[], torch.nn.Module], train_dataset: Any, tmp_path: Any,
    eval_dataset: Any = None, predict_dataset: Any = None, evaluate: bool = False,
    trainer_kwargs: dict[str, Any] | None = None, **args: Any,
) -> Run:
    """Builds the trainer of one library after seeding, trains, and optionally evaluates / predicts."""
    hf_side = trainer_cls.__module__.startswith("transformers") or issubclass(trainer_cls, transformers.Trainer)
    args_cls = transformers.TrainingArguments if hf_side else hf_lightning.TrainingArguments
    defaults = dict(report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, logging_steps=1)
    training_args = args_cls(str(tmp_path / ("hf" if hf_side else "hfl")), **{**defaults, **args})
    transformers.set_seed(training_args.seed)
    trainer = trainer_cls(model=model_fn(), args=training_args, train_dataset=train_dataset,
                          eval_dataset=eval_dataset, **(trainer_kwargs or {}))
    out = trainer.train()
    metrics = trainer.evaluate() if evaluate else None
    preds = trainer.predict(predict_dataset) if predict_dataset is not None else None
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return Run(weights, trainer.state.log_history, out.training_loss, out.global_step, metrics, preds, trainer)


def both(model_fn: Callable[[], torch.nn.Module], train_dataset: Any, tmp_path: Any, **kwargs: Any) -> tuple[Run, Run]:
    hf = run(transformers.Trainer, model_fn, train_dataset, tmp_path, **kwargs)
    ours = run(hf_lightning.Trainer, model_fn, train_dataset, tmp_path, **kwargs)
    return hf, ours


def max_rel_diff(a: Any, b: Any) -> float:
    """Largest relative difference between two nested structures of numbers / tensors / arrays."""
    if isinstance(a, dict):
        assert set(a) == set(b), (sorted(a), sorted(b))
        return max([max_rel_diff(a[k], b[k]) for k in a] or [0.0])
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), (len(a), len(b))
        return max([max_rel_diff(x, y) for x, y in zip(a, b)] or [0.0])
    if torch.is_tensor(a) or isinstance(a, np.ndarray):
        x, y = np.asarray(torch.as_tensor(a).double()), np.asarray(torch.as_tensor(b).double())
        assert x.shape == y.shape, (x.shape, y.shape)
        # per tensor: the largest difference relative to the tensor's largest magnitude
        return float(np.max(np.abs(x - y)) / max(float(np.max(np.abs(y))), 1e-12)) if x.size else 0.0
    if isinstance(a, float) or isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return 0.0
        return abs(a - b) / max(abs(b), 1e-6)
    assert a == b, (a, b)
    return 0.0


def assert_same(hf: Run, ours: Run, rtol: float = 1e-5, logs: bool = True) -> float:
    """Weights, train_loss, steps, every logged record (speed metrics excepted) and eval metrics agree."""
    worst = max_rel_diff(ours.weights, hf.weights)
    assert worst <= rtol, f"weights differ by {worst:.2e}"
    assert ours.global_step == hf.global_step
    worst = max(worst, max_rel_diff(ours.train_loss, hf.train_loss))
    if logs:
        a, b = strip_speed(ours.log_history), strip_speed(hf.log_history)
        assert [sorted(r) for r in a] == [sorted(r) for r in b], f"record keys differ:\n{a}\n{b}"
        worst = max(worst, max_rel_diff(a, b))
    if hf.eval_metrics is not None:
        keys = {k for k in hf.eval_metrics if not k.endswith(SPEED)}
        assert keys == {k for k in ours.eval_metrics if not k.endswith(SPEED)}
        worst = max(worst, max_rel_diff({k: ours.eval_metrics[k] for k in keys}, {k: hf.eval_metrics[k] for k in keys}))
    if hf.predictions is not None:
        worst = max(worst, max_rel_diff(ours.predictions.predictions, hf.predictions.predictions))
        if hf.predictions.label_ids is not None:
            worst = max(worst, max_rel_diff(ours.predictions.label_ids, hf.predictions.label_ids))
    assert worst <= rtol, f"largest relative difference {worst:.2e}"
    return worst
