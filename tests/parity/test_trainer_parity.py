"""hf_lightning.Trainer beside transformers.Trainer in the same test: same model, data and seed, same numbers.

Each test compares final weights, train_loss, global_step, every logged record (loss / grad_norm / learning_rate /
epoch / step, eval metrics; runtimes excepted), evaluation metrics and predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

import hf_lightning
from tests.helpers.tiny import (
    IterableRegression,
    RegressionDataset,
    RegressionModel,
    StrictRegressionModel,
)
from tests.parity.harness import assert_same, both, max_rel_diff, run

REG = dict(per_device_train_batch_size=8, num_train_epochs=3, learning_rate=0.1)


def test_reference_numbers_and_full_log(tmp_path):
    hf, ours = both(RegressionModel, RegressionDataset(), tmp_path, **REG)
    assert_same(hf, ours, rtol=1e-7)
    # The reference figures of HF's own regression test set-up (../shared/PARITY.md).
    assert float(ours.weights["a"]) == pytest.approx(0.71025360, abs=5e-7)
    assert float(ours.weights["b"]) == pytest.approx(1.23270667, abs=5e-7)
    assert ours.train_loss == pytest.approx(5.87006569, rel=1e-7)
    first = ours.log_history[0]
    assert first["loss"] == pytest.approx(5.287082, rel=1e-6) and first["grad_norm"] == pytest.approx(4.085148, rel=1e-6)
    assert first["epoch"] == pytest.approx(1 / 8) and first["step"] == 1 and len(ours.log_history) == 25


@pytest.mark.parametrize("case", [
    dict(num_train_epochs=1.5),
    dict(max_steps=10),
    dict(lr_scheduler_type="cosine", warmup_steps=0.1),
    dict(lr_scheduler_type="constant_with_warmup", warmup_steps=3),
    dict(lr_scheduler_type="polynomial", lr_scheduler_kwargs={"power": 2.0}, warmup_steps=2),
    dict(max_grad_norm=0.0),
    dict(max_grad_norm=0.5, weight_decay=0.1, optim="adamw_torch"),
    dict(logging_steps=5, logging_first_step=True),
    dict(logging_strategy="epoch"),
    dict(seed=3, data_seed=11),
    dict(optim="sgd", learning_rate=0.05),
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_regression_cases(tmp_path, case):
    hf, ours = both(RegressionModel, RegressionDataset(), tmp_path, **{**REG, **case})
    assert_same(hf, ours, rtol=1e-6)


@pytest.mark.parametrize("case", [
    dict(eval_strategy="steps", eval_steps=5),
    dict(eval_strategy="steps", eval_steps=4, eval_delay=9, logging_steps=3),
    dict(eval_strategy="epoch", eval_on_start=True),
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_evaluation_schedule_and_eval_loss(tmp_path, case):
    hf, ours = both(RegressionModel, RegressionDataset(), tmp_path, eval_dataset=RegressionDataset(length=21, seed=1),
                    evaluate=True, predict_dataset=RegressionDataset(length=13, seed=2), per_device_eval_batch_size=5,
                    **{**REG, **case})
    assert_same(hf, ours, rtol=1e-6)
    assert any("eval_loss" in r for r in ours.log_history)


def test_short_last_accumulation_window_matches(tmp_path):
    """60 samples, batch 8 -> 8 batches per epoch; GA 3 -> windows of 3, 3 and 2 micro-batches."""
    kwargs = dict(REG, per_device_train_batch_size=8, gradient_accumulation_steps=3)
    hf, ours = both(StrictRegressionModel, RegressionDataset(length=60), tmp_path, **kwargs)
    assert_same(hf, ours, rtol=1e-6)


def test_accumulation_equals_the_large_batch_where_transformers_does_not(tmp_path):
    """The regression model's forward takes **kwargs but its loss ignores num_items_in_batch: transformers 5.x then
    skips the division by the accumulation steps (loss and gradients x GA). hf_lightning equals the batch-8 run."""
    big_hf, big = both(RegressionModel, RegressionDataset(), tmp_path / "big", **REG)
    acc_hf, acc = both(RegressionModel, RegressionDataset(), tmp_path / "acc",
                       **dict(REG, per_device_train_batch_size=4, gradient_accumulation_steps=2))
    assert max_rel_diff(acc.weights, big.weights) < 1e-5
    for ours, reference in zip(acc.log_history[:-1], big.log_history[:-1]):
        assert ours["loss"] == pytest.approx(reference["loss"], rel=1e-5)
        assert ours["grad_norm"] == pytest.approx(reference["grad_norm"], rel=1e-5)
    # ... while transformers' accumulated loss is twice its own large-batch loss.
    assert acc_hf.log_history[0]["loss"] == pytest.approx(2 * big_hf.log_history[0]["loss"], rel=1e-5)


def test_iterable_dataset_with_max_steps(tmp_path):
    hf, ours = both(RegressionModel, IterableRegression(), tmp_path, **dict(REG, max_steps=12))
    assert_same(hf, ours, rtol=1e-6)


def test_model_init_is_called_after_seeding(tmp_path):
    def init():
        model = RegressionModel()
        with torch.no_grad():
            model.a.normal_()
        return model

    kwargs = dict(REG, seed=5)
    hf_args = transformers.TrainingArguments(tmp_path / "a", report_to=[], use_cpu=True, save_strategy="no",
                                             logging_steps=1, disable_tqdm=True, **kwargs)
    our_args = hf_lightning.TrainingArguments(tmp_path / "b", report_to=[], use_cpu=True, save_strategy="no",
                                              logging_steps=1, disable_tqdm=True, **kwargs)
    hf = transformers.Trainer(model_init=init, args=hf_args, train_dataset=RegressionDataset())
    ours = hf_lightning.Trainer(model_init=init, args=our_args, train_dataset=RegressionDataset())
    hf.train()
    ours.train()
    assert float(ours.model.a) == pytest.approx(float(hf.model.a), rel=1e-6)
    assert max_rel_diff(ours.state.log_history[:-1], hf.state.log_history[:-1]) < 1e-6


def _metrics(pred: transformers.EvalPrediction) -> dict[str, float]:
    preds = pred.predictions if not isinstance(pred.predictions, tuple) else pred.predictions[0]
    return {"mae": float(np.abs(preds.reshape(-1) - pred.label_ids.reshape(-1)).mean())}


def test_compute_metrics_preprocess_and_include_for_metrics(tmp_path):
    seen: dict[str, list] = {"hf": [], "ours": []}

    def preprocess(logits, labels):
        return logits * 1.0

    def metrics_with_inputs(pred):
        seen["current"].append((pred.inputs is not None, pred.losses is not None))
        return _metrics(pred)

    results = []
    for side, cls in (("hf", transformers.Trainer), ("ours", hf_lightning.Trainer)):
        seen["current"] = seen[side]
        results.append(run(cls, RegressionModel, RegressionDataset(), tmp_path / side,
                           eval_dataset=RegressionDataset(length=21, seed=1), evaluate=True,
                           trainer_kwargs={"compute_metrics": metrics_with_inputs,
                                           "preprocess_logits_for_metrics": preprocess},
                           eval_strategy="epoch", include_for_metrics=["inputs", "loss"],
                           per_device_eval_batch_size=4, **REG))
    assert_same(*results, rtol=1e-6)
    assert seen["ours"] == seen["hf"] and seen["ours"][0] == (True, True)
    assert "eval_mae" in results[1].eval_metrics


@pytest.mark.parametrize("batched", [False, True], ids=["whole-set", "batch_eval_metrics"])
def test_include_for_metrics_inputs_without_the_main_input_fails_as_in_transformers(tmp_path, batched):
    """``include_for_metrics=["inputs"]`` keeps the batch's ``main_input_name`` key: where the batch lacks it (a
    speech encoder-decoder's "inputs" beside a collator's "input_values"), transformers fails with a KeyError at the
    first evaluation; hf_lightning too, and its message names the setting and the fix."""
    def other_input() -> RegressionModel:
        model = RegressionModel()
        model.main_input_name = "inputs"
        return model

    raised = {}
    for side, lib in (("hf", transformers), ("ours", hf_lightning)):
        args = lib.TrainingArguments(tmp_path / side, report_to=[], use_cpu=True, save_strategy="no",
                                     disable_tqdm=True, include_for_metrics=["inputs"], batch_eval_metrics=batched)
        trainer = lib.Trainer(model=other_input(), args=args, eval_dataset=RegressionDataset(length=8),
                              compute_metrics=(lambda p, compute_result=True: {}) if batched else _metrics)
        with pytest.raises(KeyError) as caught:
            trainer.evaluate()
        raised[side] = str(caught.value)
    assert raised["hf"] == "'inputs'"
    assert "include_for_metrics" in raised["ours"] and "main_input_name" in raised["ours"]
    assert "input_x" in raised["ours"]  # the batch's keys


def test_batch_eval_metrics(tmp_path):
    def batched(pred, compute_result):
        state = batched.__dict__.setdefault("state", {"sum": 0.0, "n": 0})
        diff = (torch.as_tensor(pred.predictions).reshape(-1) - torch.as_tensor(pred.label_ids).reshape(-1)).abs()
        state["sum"] += float(diff.sum())
        state["n"] += diff.numel()
        if compute_result:
            value, batched.state = state["sum"] / state["n"], {"sum": 0.0, "n": 0}
            return {"mae": value}
        return {}

    hf, ours = both(RegressionModel, RegressionDataset(), tmp_path, eval_dataset=RegressionDataset(length=21, seed=1),
                    evaluate=True, trainer_kwargs={"compute_metrics": batched}, batch_eval_metrics=True,
                    per_device_eval_batch_size=4, predict_dataset=RegressionDataset(length=10, seed=3), **REG)
    assert_same(hf, ours, rtol=1e-6)
    assert "eval_mae" in ours.eval_metrics
    # predict() returns every prediction with per-batch metrics too (transformers' predictions are not None)
    assert ours.predictions.predictions is not None and len(ours.predictions.predictions) == 10
    assert ours.predictions.metrics["test_mae"] == pytest.approx(hf.predictions.metrics["test_mae"], rel=1e-6)


def test_eval_dataset_dict_prefixes(tmp_path):
    evals = {"a": RegressionDataset(length=9, seed=1), "b": RegressionDataset(length=7, seed=2)}
    hf, ours = both(RegressionModel, RegressionDataset(), tmp_path, eval_dataset=evals, evaluate=True,
                    **dict(REG, max_steps=3))
    assert {"eval_a_loss", "eval_b_loss"} <= set(ours.eval_metrics)
    assert_same(hf, ours, rtol=1e-6)


class GradProbe(transformers.TrainerCallback):
    """Records, at each step event, whether the model holds gradients."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def _probe(self, event: str, model: torch.nn.Module) -> None:
        self.seen.append((event, any(p.grad is not None for p in model.parameters())))

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._probe("step_begin", model)

    def on_substep_end(self, args, state, control, model=None, **kwargs):
        self._probe("substep_end", model)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self._probe("optimizer_step", model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._probe("step_end", model)


def test_gradients_are_freed_after_each_optimizer_step_as_in_transformers(tmp_path):
    """Gradients live from the first backward of a window to the optimizer step, and are freed (None) right after
    it, before the next forward, as transformers' loop does: peak memory holds no stale set of gradients."""
    probes = {}
    for lib in (transformers, hf_lightning):
        probe = GradProbe()
        run(lib.Trainer, StrictRegressionModel, RegressionDataset(length=32), tmp_path / lib.__name__,
            trainer_kwargs={"callbacks": [probe]}, **dict(REG, per_device_train_batch_size=4,
                                                           gradient_accumulation_steps=2, num_train_epochs=1))
        probes[lib.__name__] = probe.seen
    assert probes["hf_lightning"] == probes["transformers"]
    assert {held for event, held in probes["transformers"] if event in ("step_begin", "step_end")} == {False}
    assert {held for event, held in probes["transformers"] if event in ("substep_end", "optimizer_step")} == {True}


@pytest.mark.parametrize("case", [
    dict(lr_scheduler_type="reduce_lr_on_plateau", lr_scheduler_kwargs={"patience": 0, "factor": 0.5}),
    dict(lr_scheduler_type="reduce_lr_on_plateau", metric_for_best_model="mae",
         lr_scheduler_kwargs={"patience": 0, "mode": "max"}),
    dict(lr_scheduler_type="greedy", lr_scheduler_kwargs={"patience": 1, "factor": 0.5, "min_lr": 1e-3}),
], ids=["plateau-loss", "plateau-metric", "greedy"])
def test_schedules_that_step_on_the_eval_metric(tmp_path, case):
    """reduce_lr_on_plateau and greedy step on metric_for_best_model (eval_loss by default) after each evaluation;
    the logged learning rates, losses and final weights equal transformers'."""
    def mae(pred):
        return {"mae": float(np.abs(pred.predictions.reshape(-1) - pred.label_ids.reshape(-1)).mean())}

    hf, ours = both(RegressionModel, RegressionDataset(), tmp_path, eval_dataset=RegressionDataset(16, seed=1),
                    trainer_kwargs={"compute_metrics": mae}, eval_strategy="steps", eval_steps=3,
                    **dict(REG, learning_rate=0.3), **case)
    assert_same(hf, ours, rtol=1e-6)
    lrs = [r["learning_rate"] for r in ours.log_history if "learning_rate" in r]
    assert len(set(lrs)) > 1  # the schedule moved


def test_a_plateau_scheduler_passed_in_optimizers(tmp_path):
    def pair(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
        return optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=0, factor=0.5)

    runs = {}
    for lib in (transformers, hf_lightning):
        transformers.set_seed(42)
        model = RegressionModel()
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, save_strategy="no",
                                     disable_tqdm=True, logging_steps=1, eval_strategy="steps", eval_steps=4,
                                     metric_for_best_model="loss", **REG)
        trainer = lib.Trainer(model=model, args=args, train_dataset=RegressionDataset(),
                              eval_dataset=RegressionDataset(16, seed=1), optimizers=pair(model))
        trainer.train()
        runs[lib.__name__] = [r["learning_rate"] for r in trainer.state.log_history if "learning_rate" in r], \
            model.state_dict()
    assert runs["hf_lightning"][0] == pytest.approx(runs["transformers"][0], rel=1e-6)
    assert max_rel_diff(runs["hf_lightning"][1], runs["transformers"][1]) < 1e-6
    assert len(set(runs["hf_lightning"][0])) > 1  # the schedule moved
