"""Every output users read, compared whole (keys and values) with transformers.Trainer run beside in the same test.

For each case both libraries train the same model (without ``**kwargs`` in its forward, so transformers normalises
accumulated losses correctly: tests/parity/test_trainer_parity.py has the case where it does not) on the same data and seed, then evaluate, predict, and write
transformers' result files (``save_metrics``) and ``trainer_state.json``. Compared: ``train().metrics``,
``evaluate()``, ``predict().metrics``, every ``log_history`` record, ``trainer_state.json`` (top level and inside each
checkpoint), ``train_results.json`` / ``eval_results.json`` / ``all_results.json``, and the checkpoint folders left.
Timing values (``*_runtime``, ``*_per_second``) are compared by key only. Nothing is compared against a written-down
list: the keys follow the installed transformers.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest
import transformers

import hf_lightning
from tests.helpers.tiny import RegressionDataset, StrictRegressionModel
from tests.parity.harness import SPEED, max_rel_diff


def regression_metrics(pred: transformers.EvalPrediction) -> dict[str, float]:
    preds = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    return {"mae": float(np.abs(preds - pred.label_ids).mean())}


def eval_sets(kind: str) -> Any:
    if kind == "dict":
        return {"near": RegressionDataset(16, seed=1), "far": RegressionDataset(24, seed=2, b=5.0)}
    return RegressionDataset(16, seed=1)


CASES = {
    "no_eval": dict(),
    "eval_epoch": dict(eval_strategy="epoch"),
    "eval_steps_best_limit": dict(eval_strategy="steps", eval_steps=5, save_strategy="steps", save_steps=5,
                                  load_best_model_at_end=True, save_total_limit=1),
    "accumulation": dict(gradient_accumulation_steps=3, eval_strategy="epoch", save_strategy="epoch"),
    "max_steps": dict(max_steps=7, eval_strategy="steps", eval_steps=3),
    "eval_dict": dict(eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=4,
                      load_best_model_at_end=True, metric_for_best_model="far_mae", greater_is_better=False,
                      save_total_limit=2),
    "eval_dict_epoch": dict(eval_strategy="epoch"),
    # the far set's error falls at each evaluation, so "greater is better" sees no improvement: stops early
    "eval_dict_early_stopping": dict(eval_strategy="steps", eval_steps=3, save_strategy="steps", save_steps=3,
                                     load_best_model_at_end=True, metric_for_best_model="eval_far_mae",
                                     greater_is_better=True, early_stopping_patience=2),
}


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def outputs(lib: Any, root: str, eval_kind: str, **case: Any) -> dict[str, Any]:
    """Trains, evaluates, predicts and saves with one library; returns everything a user reads."""
    out_dir = os.path.join(root, lib.__name__)
    patience = case.pop("early_stopping_patience", None)
    callbacks = [transformers.EarlyStoppingCallback(patience)] if patience else []
    args = lib.TrainingArguments(out_dir, report_to=[], use_cpu=True, logging_steps=2, per_device_train_batch_size=8,
                                 num_train_epochs=3, learning_rate=0.1, **{"save_strategy": "no", **case})
    transformers.set_seed(args.seed)
    trainer = lib.Trainer(model=StrictRegressionModel(), args=args, train_dataset=RegressionDataset(),
                          eval_dataset=eval_sets(eval_kind), compute_metrics=regression_metrics,
                          callbacks=callbacks)
    train = trainer.train().metrics
    trainer.save_metrics("train", train)
    evaluation = trainer.evaluate()
    trainer.save_metrics("eval", evaluation)
    predict = trainer.predict(RegressionDataset(8, seed=3)).metrics
    trainer.save_state()
    files = {name: read_json(os.path.join(out_dir, name))
             for name in ("train_results.json", "eval_results.json", "all_results.json", "trainer_state.json")}
    checkpoints = sorted(d for d in os.listdir(out_dir) if d.startswith("checkpoint-"))
    for folder in checkpoints:
        files[f"{folder}/trainer_state.json"] = read_json(os.path.join(out_dir, folder, "trainer_state.json"))
    return {"train": train, "evaluate": evaluation, "predict": predict, "log_history": trainer.state.log_history,
            "files": files, "checkpoints": checkpoints}


def comparable(value: Any, root: str) -> Any:
    """Timing values replaced by a marker (their keys still count); paths made relative to the output folder."""
    if isinstance(value, dict):
        return {k: "<timing>" if k.endswith(SPEED) else comparable(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v, root) for v in value]
    if isinstance(value, str) and value.startswith(root):
        return os.path.basename(value)
    return value


@pytest.mark.parametrize("disable_tqdm", [True, False], ids=["printer", "progress"])
@pytest.mark.parametrize("name", list(CASES))
def test_outputs_match_transformers_whole(tmp_path, name, disable_tqdm):
    case = {**CASES[name], "disable_tqdm": disable_tqdm}
    kind = "dict" if name.startswith("eval_dict") else "single"
    hf = outputs(transformers, str(tmp_path / "transformers"), kind, **case)
    ours = outputs(hf_lightning, str(tmp_path / "hf_lightning"), kind, **case)
    assert ours["checkpoints"] == hf["checkpoints"]
    if "early_stopping_patience" in CASES[name]:  # the case really stops early
        assert ours["files"]["trainer_state.json"]["global_step"] == 9  # of 24
    for part in ("train", "evaluate", "predict", "log_history", "files"):
        a = comparable(ours[part], os.path.join(str(tmp_path / "hf_lightning"), "hf_lightning"))
        b = comparable(hf[part], os.path.join(str(tmp_path / "transformers"), "transformers"))
        if isinstance(a, list):  # one record at a time: the failure names the first record that differs
            assert [sorted(r) for r in a] == [sorted(r) for r in b], f"{part} record keys differ"
        else:
            assert sorted(a) == sorted(b), f"{part} keys differ"
        assert max_rel_diff(a, b) <= 1e-5, f"{part} values differ"


def test_dict_of_eval_sets_logs_each_set_and_tracks_the_named_best(tmp_path):
    """A dict of eval sets during training: one record per set per evaluation (eval_<name>_*), and the best model
    follows metric_for_best_model naming one of them, as in transformers (checked beside it above)."""
    run = outputs(hf_lightning, str(tmp_path), "dict", **CASES["eval_dict"], disable_tqdm=True)
    records = [r for r in run["log_history"] if any(k.startswith("eval_") for k in r)]
    assert len(records) == 2 * (24 // 4 + 1)  # two sets at steps 4, 8, ..., 24, plus the final evaluate()
    assert {k.split("_")[1] for r in records for k in r if k.startswith("eval_")} == {"near", "far"}
    state = run["files"]["trainer_state.json"]
    far = {r["step"]: r["eval_far_mae"] for r in records[:-2] if "eval_far_mae" in r}
    assert state["best_metric"] == pytest.approx(min(far.values()))  # greater_is_better=False
    assert state["best_global_step"] == min(far, key=far.get)
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{state['best_global_step']}")
    assert run["evaluate"]["eval_far_mae"] == pytest.approx(state["best_metric"])  # the best model was loaded
