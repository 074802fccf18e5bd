"""Paths a ported script reaches that the other parity files do not combine, each run with transformers.Trainer beside
hf_lightning.Trainer on the same model, data and seed, and compared whole (keys and values; timings by key only):
re-running a finished script with ``resume_from_checkpoint=True``, ``evaluate(name)`` with a dict of eval sets,
``predict()`` with ``prediction_loss_only``, ``include_num_input_tokens_seen`` outside ``train()``, the
``*_model_preparation_time`` key of an evaluation before training, what ``compute_metrics`` is passed, and what an
overridden ``get_eval_dataloader`` is passed."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import torch
import transformers
from transformers.utils import logging as hf_logging

import hf_lightning
from tests.helpers.tiny import TINY_BERT, IterableRegression, RegressionDataset, StrictRegressionModel
from tests.parity.harness import SPEED, max_rel_diff, run

LIBS = (transformers, hf_lightning)


def mae(pred: transformers.EvalPrediction) -> dict[str, float]:
    return {"mae": float(np.abs(pred.predictions - pred.label_ids).mean())}


def trainer(lib: Any, out: str, eval_dataset: Any = None, compute_metrics: Any = mae, **args: Any) -> Any:
    base = {"report_to": [], "use_cpu": True, "disable_tqdm": True, "logging_steps": 1, "learning_rate": 0.1,
            "per_device_train_batch_size": 8, "num_train_epochs": 2, "save_strategy": "no"}
    training_args = lib.TrainingArguments(out, **{**base, **args})
    transformers.set_seed(training_args.seed)
    return lib.Trainer(model=StrictRegressionModel(), args=training_args, train_dataset=RegressionDataset(32),
                       eval_dataset=eval_dataset, compute_metrics=compute_metrics)


def timeless(record: dict[str, Any]) -> dict[str, Any]:
    """The record without timing values (their keys are kept, as ``<timing>``)."""
    return {k: "<timing>" if k.endswith(SPEED) else v for k, v in record.items()}


def assert_same_records(ours: Any, theirs: Any) -> None:
    """Same structure, keys in any order; numbers within 1e-5 relative; timings compared by key only."""
    if isinstance(theirs, dict):
        ours, theirs = timeless(ours), timeless(theirs)
        assert sorted(ours) == sorted(theirs), (sorted(ours), sorted(theirs))
    assert max_rel_diff(ours, theirs) <= 1e-5, (ours, theirs)


def test_rerunning_a_finished_script_with_resume_ends_training_as_transformers(tmp_path):
    """The newest checkpoint is the last step: nothing is trained, but training still ends: the final train record
    (train_loss 0.0), the best model loaded (greater_is_better on the loss: the first checkpoint), on_train_end."""
    args = dict(eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2, load_best_model_at_end=True,
                metric_for_best_model="loss", greater_is_better=True)
    seen = {}
    for lib in LIBS:
        out = str(tmp_path / lib.__name__)
        first = trainer(lib, out, RegressionDataset(16, seed=1), **args)
        first.train()
        again = trainer(lib, out, RegressionDataset(16, seed=1), **args)
        result = again.train(resume_from_checkpoint=True)
        seen[lib] = {"output": (result.global_step, result.training_loss, timeless(result.metrics)),
                     "last record": timeless(again.state.log_history[-1]),
                     "records": len(again.state.log_history), "best": again.state.best_model_checkpoint,
                     "weights": {k: v.clone() for k, v in again.model.state_dict().items()},
                     "best weights": {k: v.clone() for k, v in first.model.state_dict().items()},
                     "evaluate": again.evaluate()}
    ours, theirs = seen[hf_lightning], seen[transformers]
    assert ours["output"] == theirs["output"] and theirs["output"][1] == 0.0
    assert ours["last record"] == theirs["last record"] and "train_loss" in ours["last record"]
    assert ours["records"] == theirs["records"]
    assert ours["best"].endswith(theirs["best"].rsplit("/", 1)[-1]) and ours["best"].endswith("checkpoint-2")
    assert max_rel_diff(ours["weights"], ours["best weights"]) == 0.0  # the best model, not the last checkpoint
    assert max_rel_diff(ours["weights"], theirs["weights"]) <= 1e-5
    assert_same_records(ours["evaluate"], theirs["evaluate"])


def test_evaluate_takes_the_name_of_an_eval_set(tmp_path):
    sets = {"near": RegressionDataset(16, seed=1), "far": RegressionDataset(24, seed=2, b=5.0)}
    results = {lib: trainer(lib, str(tmp_path / lib.__name__), sets).evaluate("far") for lib in LIBS}
    assert_same_records(results[hf_lightning], results[transformers])
    assert "eval_mae" in results[hf_lightning]  # transformers' prefix: "eval", not "eval_far"
    with pytest.raises(ValueError, match="evaluate\\('close'\\).*names: \\['far', 'near'\\]"):
        trainer(hf_lightning, str(tmp_path / "bad"), sets).evaluate("close")


def test_predict_obeys_prediction_loss_only(tmp_path):
    outputs = {lib: trainer(lib, str(tmp_path / lib.__name__), prediction_loss_only=True).predict(
        RegressionDataset(8, seed=3)) for lib in LIBS}
    ours, theirs = outputs[hf_lightning], outputs[transformers]
    assert theirs.predictions is None and theirs.label_ids is None
    assert ours.predictions is None and ours.label_ids is None
    assert_same_records(ours.metrics, theirs.metrics)
    assert "test_mae" not in ours.metrics and "test_loss" in ours.metrics


def test_tokens_seen_are_logged_outside_training_too(tmp_path):
    seen = {}
    for lib in LIBS:
        t = trainer(lib, str(tmp_path / lib.__name__), RegressionDataset(16, seed=1), include_num_input_tokens_seen=True)
        before = t.evaluate()
        t.train()
        t.log({"note": 1.0})
        seen[lib] = (before, t.evaluate(), t.state.log_history[-2], t.state.log_history[-1])
    for ours, theirs in zip(seen[hf_lightning], seen[transformers]):
        assert_same_records(ours, theirs)
    assert seen[hf_lightning][1]["num_input_tokens_seen"] == 64  # 2 epochs of 32 scalars


def test_an_evaluation_before_training_reports_the_model_preparation_time_from_then_on(tmp_path):
    keys = {}
    for lib in LIBS:
        t = trainer(lib, str(tmp_path / lib.__name__), RegressionDataset(16, seed=1), eval_strategy="epoch")
        first = t.evaluate()
        t.train()
        keys[lib] = [sorted(first), sorted(t.evaluate()), sorted(t.predict(RegressionDataset(8, seed=3)).metrics),
                     [sorted(r) for r in t.state.log_history]]
    assert keys[hf_lightning] == keys[transformers]
    assert "eval_model_preparation_time" in keys[hf_lightning][0]
    assert "test_model_preparation_time" in keys[hf_lightning][2]
    trained_first = trainer(hf_lightning, str(tmp_path / "trained_first"), RegressionDataset(16, seed=1))
    trained_first.train()
    assert not any(k.endswith("model_preparation_time") for k in trained_first.evaluate())


def test_compute_metrics_gets_compute_result_only_with_batch_eval_metrics(tmp_path):
    def flagged(pred: transformers.EvalPrediction, compute_result: bool = False) -> dict[str, float]:
        return {"compute_result": float(compute_result)}

    for batch_eval_metrics in (False, True):
        results = {lib: trainer(lib, str(tmp_path / f"{lib.__name__}{batch_eval_metrics}"),
                                RegressionDataset(16, seed=1), compute_metrics=flagged,
                                batch_eval_metrics=batch_eval_metrics).evaluate() for lib in LIBS}
        assert_same_records(results[hf_lightning], results[transformers])
        assert results[hf_lightning]["eval_compute_result"] == float(batch_eval_metrics)


def test_the_state_holds_the_callbacks_states_before_training(tmp_path):
    """save_state() before train() writes the stateful callbacks' states (TrainerControl, EarlyStoppingCallback)."""
    states = {}
    for lib in LIBS:
        out = tmp_path / lib.__name__
        args = lib.TrainingArguments(str(out), report_to=[], use_cpu=True, eval_strategy="epoch", save_strategy="epoch",
                                     load_best_model_at_end=True)
        t = lib.Trainer(model=StrictRegressionModel(), args=args, train_dataset=RegressionDataset(32),
                        eval_dataset=RegressionDataset(16, seed=1),
                        callbacks=[transformers.EarlyStoppingCallback(early_stopping_patience=2)])
        t.save_state()
        states[lib] = (out / "trainer_state.json").read_text(encoding="utf-8")
    assert states[hf_lightning] == states[transformers]
    assert '"TrainerControl"' in states[hf_lightning] and '"EarlyStoppingCallback"' in states[hf_lightning]


def test_label_names_default_to_the_models_own_as_transformers(tmp_path):
    """transformers takes the label names from the model's forward (``find_labels``): a question-answering model's
    are start_positions and end_positions, so its evaluation has a loss and tuple label_ids; ``label_names=[]``
    means no labels at all (predictions then hold the model's own loss, as transformers returns them)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_lightning.data.resolve_model_path("minilm"))
    texts = ["what film was it", "the plot was thin", "a very good movie", "who acted in it"] * 4
    rows = [{**tokenizer(t), "start_positions": i % 3, "end_positions": i % 3 + 1} for i, t in enumerate(texts)]
    data = datasets.Dataset.from_list(rows)

    def qa_model() -> Any:
        transformers.set_seed(0)
        return transformers.BertForQuestionAnswering(transformers.AutoConfig.for_model(**TINY_BERT))

    outputs = {}
    for lib in LIBS:
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, max_steps=2,
                                     per_device_train_batch_size=4, per_device_eval_batch_size=8)
        t = lib.Trainer(model=qa_model(), args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer)
        t.train()
        empty = lib.Trainer(model=qa_model(), args=lib.TrainingArguments(
            str(tmp_path / f"{lib.__name__}-empty"), report_to=[], use_cpu=True, label_names=[]),
            processing_class=tokenizer)
        qa_data = datasets.Dataset.from_list([{**r, "labels": 1} for r in rows])
        outputs[lib] = (t.label_names, t.evaluate(), t.predict(data), empty.predict(qa_data.remove_columns(
            ["start_positions", "end_positions"])))
    ours, theirs = outputs[hf_lightning], outputs[transformers]
    assert ours[0] == theirs[0] == ["start_positions", "end_positions"]
    assert_same_records(ours[1], theirs[1])
    assert "eval_loss" in ours[1]
    for mine, hf in ((ours[2], theirs[2]), (ours[3], theirs[3])):
        assert_same_records(mine.metrics, hf.metrics)
        assert max_rel_diff(mine.predictions, hf.predictions) <= 1e-5
        assert (mine.label_ids is None) == (hf.label_ids is None)
        if hf.label_ids is not None:
            assert max_rel_diff(mine.label_ids, hf.label_ids) == 0.0
    assert ours[3].label_ids is None and "test_loss" not in ours[3].metrics


def test_a_kv_cache_model_evaluates_predicts_and_saves_as_transformers(tmp_path):
    """A GPT-2 trained with a collator that holds the tokenizer and no processing class: use_cache is set from the
    arguments at init (False), so evaluate() with compute_metrics and predict() return logits, not caches; every
    checkpoint holds the collator's tokenizer, as transformers saves it."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_lightning.data.resolve_model_path("minilm"))
    texts = ["the film was good", "a very long and dull plot", "acting", "what a story this movie tells"] * 3
    data = datasets.Dataset.from_list([tokenizer(t) for t in texts]).remove_columns(["token_type_ids"])
    collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm=False)

    def gpt2() -> Any:
        transformers.set_seed(0)
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=tokenizer.vocab_size, n_embd=16, n_layer=2, n_head=2, n_positions=32))
        model.loss_type = "ForCausalLM"
        return model

    def token_accuracy(pred: transformers.EvalPrediction) -> dict[str, float]:
        return {"token_accuracy": float((pred.predictions.argmax(-1)[:, :-1] == pred.label_ids[:, 1:]).mean())}

    seen = {}
    for lib in LIBS:
        out = tmp_path / lib.__name__
        args = lib.TrainingArguments(str(out), report_to=[], use_cpu=True, max_steps=2, save_steps=2,
                                     per_device_train_batch_size=4, per_device_eval_batch_size=4)
        t = lib.Trainer(model=gpt2(), args=args, train_dataset=data, eval_dataset=data, data_collator=collator,
                        compute_metrics=token_accuracy)
        use_cache = t.model.config.use_cache
        t.train()
        files = sorted(p.name for p in (out / "checkpoint-2").iterdir() if p.name != "training_args.json")
        seen[lib] = (use_cache, t.evaluate(), t.predict(data), files)
    ours, theirs = seen[hf_lightning], seen[transformers]
    assert ours[0] is theirs[0] is False
    assert_same_records(ours[1], theirs[1])
    assert max_rel_diff(ours[2].predictions, theirs[2].predictions) <= 1e-5
    assert ours[2].predictions.shape == theirs[2].predictions.shape
    assert_same_records(ours[2].metrics, theirs[2].metrics)
    assert ours[3] == theirs[3] and "tokenizer_config.json" in ours[3]


def test_a_length_column_is_an_unused_column_as_in_transformers(tmp_path):
    """group_by_length with a length column and remove_unused_columns on (the default): transformers drops the column
    before anything reads it, so the collator and the model never see it; the same here."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_lightning.data.resolve_model_path("minilm"))
    texts = ["the film was good", "a very long and dull plot", "acting", "what a story this movie tells"] * 4
    data = datasets.Dataset.from_list([{**tokenizer(t), "label": i % 2, "length": 100 - i}
                                       for i, t in enumerate(texts)])
    seen = {}
    for lib in LIBS:
        keys: list[list[str]] = []

        def collate(features: list[dict[str, Any]], keys: list = keys) -> Any:
            keys.append(sorted(features[0]))
            return transformers.DataCollatorWithPadding(tokenizer)(features)

        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, max_steps=3,
                                     per_device_train_batch_size=4, train_sampling_strategy="group_by_length")
        model = transformers.BertForSequenceClassification(transformers.AutoConfig.for_model(**TINY_BERT,
                                                                                             num_labels=2))
        lib.Trainer(model=model, args=args, train_dataset=data, data_collator=collate).train()
        seen[lib] = keys
    assert seen[hf_lightning] == seen[transformers]
    assert "length" not in seen[hf_lightning][0] and "input_ids" in seen[hf_lightning][0]


def test_checkpoints_hold_the_flos_so_far_as_transformers(tmp_path):
    """transformers stores the floating-point operations counted so far before writing each checkpoint's
    trainer_state.json; a run resumed from it then reports the whole run's total_flos."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_lightning.data.resolve_model_path("minilm"))
    texts = ["the film was good", "a very long and dull plot", "acting", "what a story this movie tells"] * 4
    data = datasets.Dataset.from_list([{**tokenizer(t), "label": i % 2} for i, t in enumerate(texts)])
    flos = {}
    for lib in LIBS:
        out = tmp_path / lib.__name__
        args = lib.TrainingArguments(str(out), report_to=[], use_cpu=True, max_steps=4, save_steps=2,
                                     per_device_train_batch_size=4, logging_steps=3)
        transformers.set_seed(0)
        model = transformers.BertForSequenceClassification(transformers.AutoConfig.for_model(**TINY_BERT,
                                                                                             num_labels=2))
        lib.Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer).train()
        flos[lib] = [json.loads((out / f"checkpoint-{n}" / "trainer_state.json").read_text())["total_flos"]
                     for n in (2, 4)]
    assert flos[hf_lightning] == flos[transformers]
    assert 0 < flos[hf_lightning][0] < flos[hf_lightning][1]


def test_an_overridden_get_eval_dataloader_receives_what_transformers_passes_it(tmp_path):
    """The name of each of the trainer's eval sets (``evaluate()``, ``evaluate(name)``, the evaluations during
    ``train()``), a data set given to ``evaluate`` itself (alone or in a dict)."""
    sets = {"near": RegressionDataset(16, seed=1), "far": RegressionDataset(24, seed=2, b=5.0)}
    other = RegressionDataset(8, seed=3)
    seen, results = {}, {}
    for lib in LIBS:
        calls: list[Any] = []

        class Recording(lib.Trainer):
            def get_eval_dataloader(self, eval_dataset=None, calls=calls):
                calls.append(eval_dataset if isinstance(eval_dataset, str) or eval_dataset is None
                             else f"data set of {len(eval_dataset)}")
                return super().get_eval_dataloader(eval_dataset)

        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                     learning_rate=0.1, per_device_train_batch_size=8, num_train_epochs=1,
                                     save_strategy="no", eval_strategy="steps", eval_steps=2)
        transformers.set_seed(args.seed)
        run = Recording(model=StrictRegressionModel(), args=args, train_dataset=RegressionDataset(32),
                        eval_dataset=sets, compute_metrics=mae)
        results[lib] = [run.evaluate(), run.evaluate("far"), run.evaluate({"x": other}), run.evaluate(other)]
        calls.append("train")
        run.train()
        seen[lib] = calls
    assert seen[hf_lightning] == seen[transformers]
    assert seen[transformers][:5] == ["near", "far", "far", "data set of 8", "data set of 8"]
    assert seen[transformers][5:] == ["train", "near", "far", "near", "far"]
    for ours, theirs in zip(results[hf_lightning], results[transformers]):
        assert_same_records(ours, theirs)


def test_an_evaluation_set_without_a_batch_gives_what_transformers_gives(tmp_path):
    """``dataloader_drop_last`` with fewer samples than a batch: nothing to evaluate. ``evaluate()`` / ``predict()``
    return transformers' results (speed metrics only, no predictions), not those of the pass before; training with
    an evaluation per epoch goes on, logs an eval record at each, and draws from the global RNG as transformers'
    evaluation does (the next epoch's dropout, so the losses and final weights, match)."""
    def data(n: int, seed: int) -> datasets.Dataset:
        ids = np.random.default_rng(seed).integers(1, 1000, (n, 8))
        return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 0] % 2).tolist()})

    seen = {}
    for lib in LIBS:
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                     num_train_epochs=2, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                                     dataloader_drop_last=True, eval_strategy="epoch", logging_steps=2,
                                     save_strategy="no")
        transformers.set_seed(0)
        model = transformers.BertForSequenceClassification(transformers.AutoConfig.for_model(**TINY_BERT))
        run = lib.Trainer(model=model, args=args, train_dataset=data(16, 1), eval_dataset=data(3, 2))
        passes = [run.evaluate(data(8, 3)), run.evaluate()]  # one with batches first: nothing of it may be left
        predictions = [run.predict(data(8, 3)), run.predict(data(3, 2))]
        run.train()
        seen[lib] = {"evaluate": passes, "predict": predictions, "log": run.state.log_history,
                     "weights": {k: v.clone() for k, v in run.model.state_dict().items()}}
    ours, theirs = seen[hf_lightning], seen[transformers]
    for mine, expected in zip(ours["evaluate"], theirs["evaluate"]):
        assert_same_records(mine, expected)
    assert "eval_loss" in ours["evaluate"][0] and "eval_loss" not in ours["evaluate"][1]
    assert ours["predict"][1].predictions is None and ours["predict"][1].label_ids is None
    for mine, expected in zip(ours["predict"], theirs["predict"]):
        assert_same_records(mine.metrics, expected.metrics)
    assert len(ours["log"]) == len(theirs["log"])
    for mine, expected in zip(ours["log"], theirs["log"]):
        assert_same_records(mine, expected)
    assert sum("eval_runtime" in record for record in ours["log"]) == 2
    assert max_rel_diff(ours["weights"], theirs["weights"]) <= 1e-5


def _marked_rows(n: int, seed: int, marked: tuple[int, ...]) -> datasets.Dataset:
    ids = np.random.default_rng(seed).integers(1, 99, (n, 8))
    ids[list(marked), 0] = 99  # the subclass below makes these rows' batches' loss inf
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 1] % 2).tolist()})


@pytest.mark.parametrize("accumulation", [1, 2])
def test_the_nan_inf_filter_replaces_each_micro_batch_and_leaves_eval_batches_out(tmp_path, accumulation):
    """``logging_nan_inf_filter``: transformers replaces each micro-batch whose loss is inf by the mean of the steps
    since the last log (so far), and leaves the eval batches whose loss is inf out of ``eval_loss``. Without the
    filter both report inf; after it, hf_lightning's later records are finite again (docs/parity.md difference 13)."""
    for filtered in (True, False):
        seen = {}
        for lib in LIBS:
            class Spiking(lib.Trainer):
                def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                    out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
                    spike = float("inf") if bool((inputs["input_ids"][:, 0] == 99).any()) else 0.0
                    return (out[0] + spike, out[1]) if return_outputs else out + spike

            args = lib.TrainingArguments(
                str(tmp_path / f"{lib.__name__}-{filtered}"), report_to=[], use_cpu=True, disable_tqdm=True,
                num_train_epochs=1, per_device_train_batch_size=2, gradient_accumulation_steps=accumulation,
                per_device_eval_batch_size=2, logging_steps=1, save_strategy="no",
                logging_nan_inf_filter=filtered)
            transformers.set_seed(0)
            model = transformers.BertForSequenceClassification(transformers.AutoConfig.for_model(**TINY_BERT))
            model.accepts_loss_kwargs = False  # a mean loss: no difference 1 under accumulation
            run = Spiking(model=model, args=args, train_dataset=_marked_rows(16, 1, (5,)),
                          eval_dataset=_marked_rows(8, 2, (3,)))
            run.train()
            seen[lib] = {"log": [r for r in run.state.log_history if "loss" in r], "eval": run.evaluate()}
        ours, theirs = seen[hf_lightning], seen[transformers]
        if filtered:
            assert_same_records(ours["eval"], theirs["eval"])
            assert all(np.isfinite(r["loss"]) for r in ours["log"]) and np.isfinite(ours["eval"]["eval_loss"])
            for mine, expected in zip(ours["log"], theirs["log"], strict=True):
                assert_same_records(mine, expected)
        else:  # the same up to the inf step; transformers' records are nan after it
            assert sorted(ours["eval"]) == sorted(theirs["eval"])
            assert ours["eval"]["eval_loss"] == theirs["eval"]["eval_loss"] == float("inf")
            spiked = next(i for i, r in enumerate(theirs["log"]) if not np.isfinite(r["loss"]))
            for mine, expected in zip(ours["log"][:spiked], theirs["log"][:spiked]):
                assert_same_records(mine, expected)
            assert ours["log"][spiked]["loss"] == theirs["log"][spiked]["loss"] == float("inf")
            assert all(np.isfinite(r["loss"]) for r in ours["log"][spiked + 1:])


@pytest.mark.parametrize("kwargs", [None, {}, {"every_n_layers": 2}, {"use_reentrant": True}], ids=str)
def test_activation_checkpointing_is_switched_on_by_train_as_in_transformers(tmp_path, kwargs):
    """Off until ``train()`` (an evaluation before it runs without), then on with transformers' keywords:
    ``every_n_layers`` picks the layers, the rest reach ``torch.utils.checkpoint`` (none given: the model's default,
    non-reentrant)."""
    seen = {}
    for lib in LIBS:
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                     max_steps=2, per_device_train_batch_size=4, logging_steps=1, save_strategy="no",
                                     activation_checkpointing=True, activation_checkpointing_kwargs=kwargs)
        transformers.set_seed(0)
        model = transformers.BertForSequenceClassification(transformers.AutoConfig.for_model(**TINY_BERT))
        run = lib.Trainer(model=model, args=args, train_dataset=_marked_rows(8, 1, ()),
                          eval_dataset=_marked_rows(4, 2, ()))
        run.evaluate()
        before = model.is_activation_checkpointing
        run.train()
        layers = [(layer.gradient_checkpointing, getattr(getattr(layer, "_gradient_checkpointing_func", None),
                                                         "keywords", None)) for layer in model.bert.encoder.layer]
        seen[lib] = {"before": before, "after": model.is_activation_checkpointing, "layers": layers,
                     "log": run.state.log_history, "weights": {k: v.clone() for k, v in model.state_dict().items()}}
    ours, theirs = seen[hf_lightning], seen[transformers]
    assert ours["before"] is theirs["before"] is False and ours["after"] is theirs["after"] is True
    assert ours["layers"] == theirs["layers"]
    assert [on for on, _ in ours["layers"]] == ([True, False] if kwargs == {"every_n_layers": 2} else [True, True])
    for mine, expected in zip(ours["log"], theirs["log"], strict=True):
        assert_same_records(mine, expected)
    assert max_rel_diff(ours["weights"], theirs["weights"]) <= 1e-6


class _EventRecorder(transformers.TrainerCallback):
    def __init__(self, events: list[tuple[Any, ...]]) -> None:
        self.events = events

    def on_prediction_step(self, args, state, control, **kwargs):
        self.events.append(("on_prediction_step", state.global_step, control.should_training_stop))

    def on_evaluate(self, args, state, control, **kwargs):
        self.events.append(("on_evaluate", state.global_step, control.should_training_stop))

    def on_predict(self, args, state, control, **kwargs):
        self.events.append(("on_predict", state.global_step, control.should_training_stop))


def test_evaluate_and_predict_fire_transformers_events_and_train_leaves_its_control(tmp_path):
    """``on_prediction_step`` per batch of ``evaluate()`` / ``predict()`` (outside ``train()`` too), and the
    ``TrainerControl`` that ``train()`` ended with (``should_training_stop``) seen by the calls after it."""
    seen = {}
    for lib in LIBS:
        events: list[tuple[Any, ...]] = []
        run = trainer(lib, str(tmp_path / lib.__name__), RegressionDataset(12, seed=1), per_device_eval_batch_size=4)
        run.add_callback(_EventRecorder(events))
        run.evaluate()
        run.predict(RegressionDataset(8, seed=2))
        run.train()
        run.evaluate()
        seen[lib] = (events, run.control.should_training_stop)
    assert seen[hf_lightning] == seen[transformers]
    assert seen[transformers][0][:4] == [("on_prediction_step", 0, False)] * 3 + [("on_evaluate", 0, False)]
    assert seen[transformers][0][-1][2] is True and seen[transformers][1] is True


@pytest.mark.parametrize("optim", ["schedule_free_adamw", "schedule_free_sgd"])
def test_a_schedule_free_optimizer_trains_and_evaluates_in_its_modes_as_in_transformers(tmp_path, optim):
    """transformers puts an optimizer with train() / eval() in train mode at each training step and in eval mode
    when an evaluation begins (schedule-free weights for evaluation differ from those it trains): losses, eval
    losses (during and after training) and predictions agree."""
    seen = {}
    for lib in LIBS:
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                     num_train_epochs=2, per_device_train_batch_size=4, logging_steps=1,
                                     save_strategy="no", eval_strategy="epoch", optim=optim, warmup_steps=2,
                                     learning_rate=1e-2)
        transformers.set_seed(0)
        model = transformers.BertForSequenceClassification(transformers.AutoConfig.for_model(**TINY_BERT))
        run = lib.Trainer(model=model, args=args, train_dataset=_marked_rows(16, 1, ()),
                          eval_dataset=_marked_rows(8, 2, ()))
        run.train()
        seen[lib] = {"log": run.state.log_history, "evaluate": run.evaluate(),
                     "predictions": run.predict(_marked_rows(8, 3, ())).predictions,
                     "mode": run.optimizer.optimizer.param_groups[0]["train_mode"] if lib is transformers
                     else run.optimizer.param_groups[0]["train_mode"]}
    ours, theirs = seen[hf_lightning], seen[transformers]
    for mine, expected in zip(ours["log"], theirs["log"], strict=True):
        assert_same_records(mine, expected)
    assert_same_records(ours["evaluate"], theirs["evaluate"])
    assert max_rel_diff(ours["predictions"], theirs["predictions"]) <= 1e-5
    assert ours["mode"] is theirs["mode"] is False  # left in eval mode by the last evaluation


def test_the_training_order_is_seeded_as_the_global_rng_stands_when_training_begins(tmp_path):
    """Without ``data_seed``, transformers' training sampler (accelerate's seedable sampler) is seeded with
    ``torch.initial_seed()`` when ``train()`` builds the loader: a ``model_init`` or a script that reseeds torch
    changes the order, in both."""
    def reseeding_model_init() -> Any:
        torch.manual_seed(0)
        return StrictRegressionModel()

    seen = {}
    for lib in LIBS:
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                     logging_steps=1, learning_rate=0.1, per_device_train_batch_size=8,
                                     num_train_epochs=2, save_strategy="no")
        run = lib.Trainer(model_init=reseeding_model_init, args=args, train_dataset=RegressionDataset(32))
        run.train()
        plain = trainer(lib, str(tmp_path / f"{lib.__name__}-plain"))
        torch.manual_seed(7)  # between building the Trainer and train()
        plain.train()
        seen[lib] = [[r["loss"] for r in t.state.log_history if "loss" in r] for t in (run, plain)]
    assert max_rel_diff(seen[hf_lightning], seen[transformers]) <= 1e-6
    reference = trainer(hf_lightning, str(tmp_path / "reference"))  # seeded with args.seed
    reference.train()
    assert max_rel_diff(seen[hf_lightning][1], [r["loss"] for r in reference.state.log_history if "loss" in r]) > 1e-3


def test_a_best_metric_missing_from_the_evaluation_is_reported_as_transformers_reports_it(tmp_path):
    messages = {}
    for lib in LIBS:
        run = trainer(lib, str(tmp_path / lib.__name__), RegressionDataset(8, seed=1), eval_strategy="epoch",
                      save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="f1")
        with pytest.raises(KeyError) as info:
            run.train()
        messages[lib] = str(info.value).strip("\"'")
    assert messages[hf_lightning].startswith(messages[transformers].rsplit(" via the TrainingArguments.", 1)[0])
    assert "'eval_f1'" in messages[hf_lightning] and "'eval_mae'" in messages[hf_lightning]


def test_an_unknown_compile_backend_fails_when_the_trainer_is_built_as_in_transformers(tmp_path):
    for lib in LIBS:  # both refuse it in Trainer(), before any training
        with pytest.raises(ValueError) as info:
            trainer(lib, str(tmp_path / lib.__name__), torch_compile_backend="inductr")
        assert "inductr" in str(info.value).lower()
    assert "torch_compile_backend='inductr' is unknown. Did you mean 'inductor'?" in str(info.value)
    trainer(hf_lightning, str(tmp_path / "debug"), torch_compile_backend="eager_debug")  # any registered backend


def test_the_training_loader_iterated_by_hand_reshuffles_per_pass_as_transformers(tmp_path):
    def passes(loader: Any) -> list[list[float]]:
        orders = [[float(x) for b in loader for x in b["input_x"]] for _ in range(3)]
        loader.set_epoch(0)
        orders.append([float(x) for b in loader for x in b["input_x"]])
        next(iter(loader))  # a pass broken off keeps its order for the next one
        orders.append([float(x) for b in loader for x in b["input_x"]])
        return orders

    seen = {lib: passes(trainer(lib, str(tmp_path / lib.__name__)).get_train_dataloader()) for lib in LIBS}
    assert seen[hf_lightning] == seen[transformers]
    assert seen[transformers][0] != seen[transformers][1] and seen[transformers][3] == seen[transformers][0]


def _noisy_collator(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Draws from the worker's random stream per batch (as a masked-LM collator does)."""
    x = torch.tensor([f["input_x"] for f in features])
    return {"input_x": x + torch.rand(len(features)), "labels": torch.tensor([f["labels"] for f in features])}


def test_persistent_eval_workers_live_from_one_evaluation_to_the_next_as_in_transformers(tmp_path, monkeypatch):
    """With ``dataloader_persistent_workers`` the evaluation loaders (and their workers, with their random streams) are
    kept: during training, by ``evaluate()`` after it, for a dict of sets; ``predict()`` gets fresh workers."""
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)  # left by an in-process LightningCLI run (seeds workers)
    seen = {}
    for lib in LIBS:
        run = trainer(lib, str(tmp_path / lib.__name__), {"a": RegressionDataset(8, seed=1), "b": RegressionDataset(8)},
                      eval_strategy="epoch", dataloader_num_workers=1, dataloader_persistent_workers=True,
                      per_device_eval_batch_size=4)
        run.data_collator = _noisy_collator
        run.model.a.data.fill_(1.0)  # the input noise reaches the loss
        run.train()
        draws = [r["eval_a_loss"] for r in run.state.log_history if "eval_a_loss" in r] + [torch.rand(1).item()]
        for _ in range(2):
            draws += [run.evaluate()["eval_a_loss"], run.evaluate(metric_key_prefix="again")["again_b_loss"],
                      float(run.predict(RegressionDataset(8, seed=2)).predictions.sum()), torch.rand(1).item()]
        seen[lib] = draws
    assert max_rel_diff(seen[hf_lightning], seen[transformers]) <= 1e-5, seen
    assert len(set(seen[transformers][:2] + seen[transformers][3::4])) == 4  # each evaluation drew its own noise


def test_full_determinism_leaves_transformers_cublas_workspace(tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.delenv("FLASH_ATTENTION_DETERMINISTIC", raising=False)
    seen = {}
    try:
        for lib in LIBS:
            trainer(lib, str(tmp_path / lib.__name__), full_determinism=True, max_steps=1).train()
            seen[lib] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    finally:  # the process-wide switches full determinism turns on, off again for the tests after this one
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, False
    assert seen[hf_lightning] == seen[transformers] == ":16:8"


def test_a_data_set_without_a_column_the_model_takes_fails_as_in_transformers(tmp_path):
    """``remove_unused_columns`` would leave nothing (a collator meant to read text columns, the flag left on):
    transformers' error in train(), evaluate() and predict(), not a run over an empty data set."""
    data = datasets.Dataset.from_dict({"text": ["a", "b", "c", "d"], "label_str": ["x", "y", "x", "y"]})
    messages = {}
    for lib in LIBS:
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, max_steps=1)
        transformers.set_seed(0)
        model = transformers.BertForSequenceClassification(transformers.AutoConfig.for_model(**TINY_BERT))
        run = lib.Trainer(model=model, args=args, train_dataset=data, eval_dataset=data,
                          data_collator=lambda rows: {"input_ids": torch.ones(len(rows), 4, dtype=torch.long)})
        for call in (run.train, run.evaluate, lambda run=run: run.predict(data)):
            with pytest.raises(ValueError, match="No columns in the dataset match") as info:
                call()
            messages.setdefault(lib, []).append(_unordered_lists(str(info.value).split(" in `TrainingArguments`")[0]))
    assert messages[hf_lightning] == messages[transformers]


def _unordered_lists(message: str) -> str:
    """The message with each listed group of names sorted and deduplicated (transformers lists sets)."""
    return re.sub(r"([(\[])([\w, ]+)([)\]])",
                  lambda m: m[1] + ", ".join(sorted(set(m[2].split(", ")))) + m[3], message)


def test_arguments_changed_after_the_trainer_was_built_count_in_evaluate_and_predict(tmp_path):
    """transformers reads its arguments at each call: ``prediction_loss_only`` and ``per_device_eval_batch_size``
    set on ``trainer.args`` after building the Trainer count in the next ``predict()`` / ``evaluate()``."""
    seen = {}
    for lib in LIBS:
        events: list[tuple[Any, ...]] = []
        run = trainer(lib, str(tmp_path / lib.__name__), RegressionDataset(16, seed=1), per_device_eval_batch_size=4)
        run.add_callback(_EventRecorder(events))
        first = run.predict(RegressionDataset(16, seed=2))
        run.args.prediction_loss_only = True
        run.args.per_device_eval_batch_size = 8
        second = run.predict(RegressionDataset(16, seed=2))
        steps = [sum(e[0] == "on_prediction_step" for e in events)]
        run.args.prediction_loss_only = False
        metrics = run.evaluate()
        steps.append(sum(e[0] == "on_prediction_step" for e in events) - steps[0])
        seen[lib] = (first.predictions.shape, second.predictions, sorted(timeless(second.metrics)), steps,
                     sorted(timeless(metrics)))
    assert seen[hf_lightning] == seen[transformers]
    assert seen[transformers][1] is None and seen[transformers][3] == [4 + 2, 2]


@contextlib.contextmanager
def _transformers_lines(out: str) -> Any:
    """The lines printed on transformers' logger inside the block, numbers and ``out`` masked, the dict prints and
    device set-up left out (a save is staged, then renamed: the staging name reads as the folder's)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    hf_logging.get_logger("transformers").addHandler(handler)
    lines: list[str] = []
    try:
        yield lines
    finally:
        hf_logging.get_logger("transformers").removeHandler(handler)
        hf_logging.set_verbosity_warning()
    text = stream.getvalue().replace(out, "OUT").replace("OUT/.tmp-", "OUT/")
    lines += [re.sub(r"\d+\.\d+", "N", line) for line in text.splitlines() if line.strip()
              and not line.startswith(("{", "[")) and "setting up devices" not in line and "mtime" not in line]


def test_log_level_info_prints_transformers_lines(tmp_path):
    """``log_level="info"``: the same lines on transformers' logger (training block, each evaluation's and
    prediction's header, checkpoint saves and rotation, training completed, best model loaded), numbers aside."""
    lines = {}
    for lib in LIBS:
        out = str(tmp_path / lib.__name__)
        with _transformers_lines(out) as lines[lib]:
            args = lib.TrainingArguments(out, report_to=[], use_cpu=True, disable_tqdm=True, num_train_epochs=2,
                                         per_device_train_batch_size=4, gradient_accumulation_steps=2,
                                         eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                                         save_total_limit=1, log_level="info", logging_steps=1)
            transformers.set_seed(0)
            model = transformers.BertForSequenceClassification(transformers.AutoConfig.for_model(**TINY_BERT))
            run = lib.Trainer(model=model, args=args, train_dataset=_marked_rows(16, 1, ()),
                              eval_dataset=_marked_rows(6, 2, ()))
            run.train()
            run.evaluate()
            run.predict(_marked_rows(5, 3, ()))
            run.save_model(f"{out}/final")
    assert lines[hf_lightning] == lines[transformers]
    assert "***** Running Prediction *****" in lines[transformers] and "Saving model checkpoint to OUT/final" in \
        lines[transformers]


def test_a_peft_wrapped_model_keeps_the_base_models_columns(tmp_path):
    """A PeftModel's forward takes ``*args, **kwargs``: as transformers, the unused columns are those the base model's
    forward does not take (not every column but the labels), so training sees its inputs."""
    peft = pytest.importorskip("peft")
    ids = np.random.default_rng(0).integers(5, 99, (8, 6))
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist(),
                                       "labels": ids.tolist(), "note": ["x"] * 8})
    seen = {}
    for lib in LIBS:
        transformers.set_seed(0)
        base = transformers.BertForMaskedLM(transformers.AutoConfig.for_model(**TINY_BERT))
        model = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["query", "value"]))
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                     max_steps=2, per_device_train_batch_size=4, logging_steps=1, save_strategy="no")
        run = lib.Trainer(model=model, args=args, train_dataset=data)
        run.train()
        seen[lib] = [r["loss"] for r in run.state.log_history if "loss" in r]
    assert max_rel_diff(seen[hf_lightning], seen[transformers]) <= 1e-5


def test_tensorboard_writes_where_transformers_writes(tmp_path, monkeypatch):
    """report_to="tensorboard": $TENSORBOARD_LOGGING_DIR as transformers reads it; hf_lightning's own logging_dir
    field wins over it; otherwise output_dir/runs/<date>_<host>."""
    def events(folder) -> list[str]:
        return [str(p.parent) for p in Path(folder).rglob("events.out.tfevents.*")]

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "from-env"))
    for lib in LIBS:
        trainer(lib, str(tmp_path / f"{lib.__name__}-env"), report_to=["tensorboard"], max_steps=2).train()
        assert events(tmp_path / "from-env"), lib.__name__
        assert not events(tmp_path / f"{lib.__name__}-env")
        for found in events(tmp_path / "from-env"):
            (Path(found) / next(Path(found).glob("events.out.tfevents.*")).name).unlink()
    trainer(hf_lightning, str(tmp_path / "field"), report_to=["tensorboard"], max_steps=2,
            logging_dir=str(tmp_path / "own")).train()
    assert events(tmp_path / "own") == [str(tmp_path / "own")]
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR")
    trainer(hf_lightning, str(tmp_path / "default"), report_to=["tensorboard"], max_steps=2).train()
    assert [Path(p).parent for p in events(tmp_path / "default")] == [tmp_path / "default" / "runs"]


class _SetRecorder(transformers.TrainerCallback):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        self.events.append(("on_prediction_step", len(eval_dataloader)))

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.events.append(("on_log", sorted(k for k in logs if k.endswith("_loss"))))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.events.append(("on_evaluate", sorted(k for k in metrics if k.endswith("_loss"))))


def test_a_dict_of_eval_sets_during_training_is_evaluated_one_set_after_the_other(tmp_path):
    """Each set's prediction steps (callbacks see that set's loader), then its record and on_evaluate, then the
    next set's, as transformers' evaluate() runs them."""
    seen = {}
    for lib in LIBS:
        recorder = _SetRecorder()
        run = trainer(lib, str(tmp_path / lib.__name__), {"a": RegressionDataset(6, seed=1),
                                                          "b": RegressionDataset(4, seed=2)},
                      per_device_eval_batch_size=2, eval_strategy="epoch", num_train_epochs=1)
        run.add_callback(recorder)
        run.train()
        seen[lib] = recorder.events
    assert seen[hf_lightning] == seen[transformers]
    evaluation = [e for e in seen[transformers] if e[0] != "on_log" or e[1]]
    assert evaluation[:8] == [("on_prediction_step", 3)] * 3 + [("on_log", ["eval_a_loss"]),
                                                               ("on_evaluate", ["eval_a_loss"])] + \
        [("on_prediction_step", 2)] * 2 + [("on_log", ["eval_b_loss"])]


def test_lightning_prints_nothing_of_its_own_in_the_hf_style_trainer(tmp_path):
    """transformers.Trainer prints no "GPU available" / tips / "`Trainer.fit` stopped" lines; nor does the
    HF-style Trainer that runs on Lightning (the Lightning door keeps them)."""
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("lightning.pytorch").addHandler(handler)
    try:
        run = trainer(hf_lightning, str(tmp_path), RegressionDataset(8, seed=1), eval_strategy="epoch",
                      num_train_epochs=1)
        run.train()
        run.evaluate()
        run.predict(RegressionDataset(4, seed=2))
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    assert records == []
    assert logging.getLogger("lightning.pytorch").level == logging.INFO  # left as Lightning set it


class _DropsEvalLoss(transformers.TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        logs.pop("eval_loss", None)
        logs["added_by_callback"] = 1.0


def test_reporting_sees_the_record_before_the_callbacks_change_it(tmp_path):
    """transformers' TensorBoardCallback comes before the user's callbacks: a callback that changes the record in
    on_log does not change what is reported to TensorBoard, during training and in a later evaluate()."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {}
    for lib in LIBS:
        out = tmp_path / lib.__name__
        run = trainer(lib, str(out), RegressionDataset(8, seed=1), report_to=["tensorboard"], max_steps=2)
        run.add_callback(_DropsEvalLoss())
        run.train()  # (transformers' TensorBoardCallback only has a folder once training began)
        run.evaluate()
        found = set()
        for events in out.rglob("events.out.tfevents.*"):
            accumulator = EventAccumulator(str(events))
            accumulator.Reload()
            found |= set(accumulator.Tags()["scalars"]) | set(accumulator.Tags()["tensors"])
        tags[lib] = (sorted(found), sorted(run.state.log_history[-1]))
    assert tags[hf_lightning] == tags[transformers]
    assert "eval/loss" in tags[transformers][0] and "train/added_by_callback" not in tags[transformers][0]
    assert "args/text_summary" in tags[transformers][0]  # the arguments as text (this model has no config)


@pytest.mark.parametrize("args", [dict(fp16=True), dict(fp16=True, fp16_full_eval=True), dict(max_grad_norm=-1.0),
                                  dict(accelerator_config={"split_batches": True, "dispatch_batches": True})],
                         ids=["fp16", "fp16_full_eval", "negative_max_grad_norm", "split_batches_one_process"])
def test_cpu_runs_of_gpu_options_train_as_transformers(tmp_path, args):
    """fp16 on the CPU trains in fp32 in transformers (accelerate turns fp16 on only on a GPU), fp16_full_eval
    evaluates a float16 model; a max_grad_norm below 0 means no clipping; split / dispatched batches in one process
    are the batches themselves."""
    seen = {}
    for lib in LIBS:
        run = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                    max_steps=4, per_device_train_batch_size=4, logging_steps=1, save_strategy="no",
                                    **args)
        transformers.set_seed(0)
        model = transformers.BertForSequenceClassification(transformers.AutoConfig.for_model(**TINY_BERT))
        trainer_ = lib.Trainer(model=model, args=run, train_dataset=_marked_rows(16, 1, ()),
                               eval_dataset=_marked_rows(8, 2, ()))
        trainer_.train()
        seen[lib] = (trainer_.state.log_history, trainer_.evaluate(),
                     {k: v.float().clone() for k, v in model.state_dict().items()})
    for mine, expected in zip(seen[hf_lightning][0], seen[transformers][0], strict=True):
        assert_same_records(mine, expected)
    assert_same_records(seen[hf_lightning][1], seen[transformers][1])
    assert max_rel_diff(seen[hf_lightning][2], seen[transformers][2]) <= 1e-6


# ----------------------------------------------------------------------------------------------- evaluation outputs
class _Unlabeled(torch.utils.data.Dataset):
    """The regression inputs without labels."""

    def __init__(self, length: int) -> None:
        self.data = RegressionDataset(length)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_x": self.data[i]["input_x"]}


def _shape(value: Any) -> Any:
    """Types, shapes and dtypes of what compute_metrics / preprocess_logits_for_metrics were given."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_shape(v) for v in value]
    if torch.is_tensor(value) or isinstance(value, np.ndarray):
        return (type(value).__name__, tuple(value.shape), str(value.dtype).replace("torch.", ""))
    return value


def test_batch_eval_metrics_sees_what_transformers_passes(tmp_path):
    """Per batch: the whole batch as ``inputs``, the losses in their dtype; not called for a batch without labels;
    ``compute_result`` on the last batch of a stream too; an evaluation without batches reports no old result."""
    seen = {}
    for lib in LIBS:
        calls = []

        def per_batch(pred: transformers.EvalPrediction, compute_result: bool = False, calls: list = calls) -> dict:
            calls.append((_shape(pred.inputs), _shape(pred.losses), _shape(pred.label_ids), compute_result))
            return {"seen": float(len(calls))}

        run = trainer(lib, str(tmp_path / lib.__name__), RegressionDataset(10), compute_metrics=per_batch,
                      batch_eval_metrics=True, include_for_metrics=["inputs", "loss"], per_device_eval_batch_size=4)
        results = [run.evaluate(), run.evaluate(IterableRegression(10)), run.predict(_Unlabeled(6)).metrics]
        run.args.dataloader_drop_last = True
        results.append(run.evaluate(RegressionDataset(3)))  # no whole batch: no result at all
        seen[lib] = (calls, results)
    assert seen[hf_lightning][0] == seen[transformers][0]
    for ours, theirs in zip(*(seen[lib][1] for lib in (hf_lightning, transformers)), strict=True):
        assert list(timeless(ours)) == list(timeless(theirs))
        assert_same_records(ours, theirs)
    assert [c[-1] for c in seen[transformers][0]] == [False, False, True] * 2


def test_evaluate_without_metrics_computes_the_loss_only_and_leaves_the_model_in_eval_mode(tmp_path):
    seen = {}
    for lib in LIBS:
        events: list[Any] = []

        class Recording(lib.Trainer):
            def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, events=events):
                events.append(("prediction_loss_only", prediction_loss_only))
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                     per_device_eval_batch_size=4)
        run = Recording(model=StrictRegressionModel(), args=args, eval_dataset=RegressionDataset(6),
                        preprocess_logits_for_metrics=lambda logits, labels, events=events: events.append(
                            ("preprocess", _shape(labels))) or logits + 1000)
        run.model.train()
        events.append(("eval loss", round(run.evaluate()["eval_loss"], 6)))
        events.append(("training", run.model.training))
        run.model.train()
        output = run.predict(_Unlabeled(6))  # predictions preprocessed without labels (labels=None)
        events.append(("predictions", output.predictions.round(3).tolist(), output.label_ids))
        events.append(("training", run.model.training))
        seen[lib] = events
    assert seen[hf_lightning] == seen[transformers]
    assert ("preprocess", None) in seen[transformers] and ("training", False) in seen[transformers]


def test_functions_set_on_the_trainer_after_an_evaluation_count_in_the_next(tmp_path):
    seen = {}
    for lib in LIBS:
        run = trainer(lib, str(tmp_path / lib.__name__), RegressionDataset(8), compute_metrics=None)
        records = [sorted(run.evaluate())]
        run.compute_metrics = lambda pred: {"first": 1.0}
        records.append(sorted(run.evaluate()))
        run.compute_metrics = lambda pred: {"second": 2.0}
        run.preprocess_logits_for_metrics = lambda logits, labels: logits + 100
        records.append(sorted(run.evaluate()))
        records.append(run.predict(RegressionDataset(4)).predictions.round(3).tolist())
        seen[lib] = records
    assert seen[hf_lightning] == seen[transformers]
    assert "eval_second" in seen[transformers][2]


def test_the_evaluation_loss_gets_num_items_in_batch_as_in_transformers(tmp_path):
    seen = {}
    for lib in LIBS:
        counts = []

        def summed(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None, counts: list = counts) -> Any:
            counts.append(None if num_items_in_batch is None else (float(num_items_in_batch),
                                                                   str(num_items_in_batch.dtype)))
            return ((outputs[0] - labels) ** 2).sum() / num_items_in_batch

        run = trainer(lib, str(tmp_path / lib.__name__), RegressionDataset(10), compute_metrics=None,
                      per_device_eval_batch_size=4)
        run.compute_loss_func = summed
        seen[lib] = (round(run.evaluate()["eval_loss"], 6), counts)
    assert seen[hf_lightning] == seen[transformers]
    assert [c[0] for c in seen[transformers][1]] == [4.0, 4.0, 2.0]


def test_metric_keys_come_in_transformers_order_with_its_loss_and_sample_counts(tmp_path, monkeypatch):
    """Keys in order (not sorted); a compute_metrics ``eval_loss`` gives way to the real loss, a bare ``loss`` wins;
    the speed metrics count the data set's samples, also with ``dataloader_drop_last``."""
    import importlib

    counted = []
    for name in ("transformers.trainer", "hf_lightning.modules.evaluation"):
        module = importlib.import_module(name)
        original = module.speed_metrics
        monkeypatch.setattr(module, "speed_metrics", lambda split, start, num_samples=None, num_steps=None, *a,
                            _original=original, **k: counted.append((split, num_samples, num_steps))
                            or _original(split, start, num_samples, num_steps, *a, **k))
    seen = {}
    for lib in LIBS:
        counted.clear()
        scores = [{"eval_f1": 2.0, "acc": 1.0, "eval_loss": 123.0}, {"loss": 7.0, "f1": 1.0}]
        run = trainer(lib, str(tmp_path / lib.__name__), RegressionDataset(21), per_device_eval_batch_size=4,
                      compute_metrics=lambda pred, scores=scores: dict(scores[0]), dataloader_drop_last=True)
        records = [list(run.evaluate().items())]
        scores.pop(0)
        records.append(list(run.evaluate(metric_key_prefix="test").items()))
        records.append(list(run.predict(RegressionDataset(21)).metrics.items()))
        seen[lib] = ([[(k, "<timing>" if k.endswith(SPEED) else round(v, 6)) for k, v in r] for r in records],
                     list(counted))
    assert seen[hf_lightning] == seen[transformers]
    assert seen[transformers][1][0] == ("eval", 21, 6)


def test_the_trainer_refuses_what_transformers_refuses_when_built(tmp_path):
    """A model and a model_init together; a train set without a length and no max_steps."""
    messages = {}
    for lib in LIBS:
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True)
        found = []
        for kwargs in ({"model": StrictRegressionModel(), "model_init": StrictRegressionModel},
                       {"model": StrictRegressionModel(), "train_dataset": IterableRegression(8)}):
            with pytest.raises(ValueError) as info:
                lib.Trainer(args=args, **kwargs)
            found.append(str(info.value))
        messages[lib] = found
    assert messages[hf_lightning] == messages[transformers]


def test_save_model_of_a_plain_module_writes_transformers_safetensors(tmp_path):
    from safetensors import safe_open

    seen = {}
    for lib in LIBS:
        run = trainer(lib, str(tmp_path / lib.__name__))
        run.save_model()
        with safe_open(str(tmp_path / lib.__name__ / "model.safetensors"), "pt") as file:
            seen[lib] = (file.metadata(), sorted(file.keys()))
    assert seen[hf_lightning] == seen[transformers] == ({"format": "pt"}, ["a", "b"])


def test_the_trainer_flags_scripts_read_and_set_are_transformers(tmp_path):
    """``is_deepspeed_enabled``, ``is_fsdp_enabled``, ``is_in_train`` (in and out of training),
    ``is_model_parallel``, ``place_model_on_device``, ``model_accepts_loss_kwargs`` (a forward with and without
    ``**kwargs``, and set to False by the script: the loss is then divided by the accumulation steps)."""
    from tests.helpers.tiny import RegressionModel

    seen = {}
    for lib in LIBS:
        flags: list[Any] = []

        class Flags(transformers.TrainerCallback):
            def on_step_end(self, args, state, control, flags=flags, **kwargs):
                flags.append(("in train", self.run.is_in_train))

        run = trainer(lib, str(tmp_path / lib.__name__), gradient_accumulation_steps=2, max_steps=2)
        flags += [(name, getattr(run, name)) for name in ("is_deepspeed_enabled", "is_fsdp_enabled", "is_in_train",
                                                          "is_model_parallel", "place_model_on_device",
                                                          "model_accepts_loss_kwargs", "neftune_noise_alpha")]
        callback = Flags()
        callback.run = run
        run.add_callback(callback)
        run.train()
        flags.append(("after", run.is_in_train))
        args = lib.TrainingArguments(str(tmp_path / lib.__name__ / "kw"), report_to=[], use_cpu=True,
                                     disable_tqdm=True, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                                     max_steps=2, learning_rate=0.1, save_strategy="no")
        transformers.set_seed(0)
        kw = lib.Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16))
        flags.append(("kwargs model", kw.model_accepts_loss_kwargs))
        kw.model_accepts_loss_kwargs = False
        flags.append(("set", kw.model_accepts_loss_kwargs, round(kw.train().training_loss, 5)))
        seen[lib] = flags
    assert seen[hf_lightning] == seen[transformers]
    assert ("in train", True) in seen[transformers] and ("kwargs model", True) in seen[transformers]


@pytest.mark.parametrize("objects", [False, True], ids=["tensors", "eval_use_gather_object"])
def test_the_gather_helpers_of_evaluation_loops_are_transformers(tmp_path, objects):
    """``trainer.gather_function`` and ``trainer.accelerator.pad_across_processes`` / ``gather_for_metrics``, which
    evaluation loops copied from transformers call, give transformers' results (one process; under DDP:
    ``tests/distributed/test_ddp.py``); a script may set ``gather_function``."""
    seen = {}
    for lib in LIBS:
        run = trainer(lib, str(tmp_path / lib.__name__), eval_use_gather_object=objects)
        values = torch.arange(6.0).reshape(2, 3)
        results = [run.gather_function(values), run.gather_function({"x": values, "y": [values]}),
                   run.accelerator.pad_across_processes(values, dim=1, pad_index=-100),
                   run.accelerator.pad_across_processes([values, values.long()], pad_first=True),
                   run.accelerator.gather_for_metrics(["a", "b"])]
        run.gather_function = len
        results.append(run.gather_function(values))
        seen[lib] = results
    assert max_rel_diff(seen[hf_lightning], seen[transformers]) == 0.0
    assert seen[hf_lightning][-1] == 2


def test_loaders_asked_for_by_hand_follow_the_data_sets_and_arguments_set_since(tmp_path):
    seen = {}
    for lib in LIBS:
        run = trainer(lib, str(tmp_path / lib.__name__), RegressionDataset(12, seed=1), per_device_eval_batch_size=4)
        lengths = [(len(run.get_train_dataloader()), len(run.get_eval_dataloader()))]
        run.train_dataset, run.eval_dataset = RegressionDataset(64), RegressionDataset(40, seed=2)
        lengths.append((len(run.get_train_dataloader()), len(run.get_eval_dataloader())))
        run.args.per_device_eval_batch_size = 10
        lengths.append(len(run.get_eval_dataloader()))
        run.train()
        run.train_dataset = RegressionDataset(16)
        lengths.append(len(run.get_train_dataloader()))
        seen[lib] = lengths
    assert seen[hf_lightning] == seen[transformers] == [(4, 3), (8, 10), 4, 2]


def test_train_with_a_trial_keeps_its_parameters_in_the_state_as_transformers(tmp_path):
    seen = {}
    for lib in LIBS:
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                     max_steps=2, save_steps=2, per_device_train_batch_size=4)
        run = lib.Trainer(model_init=StrictRegressionModel, args=args, train_dataset=RegressionDataset(16))
        run.train(trial={"learning_rate": 0.5})
        saved = json.loads((tmp_path / lib.__name__ / "checkpoint-2" / "trainer_state.json").read_text())
        seen[lib] = (run.state.trial_params, run.state.is_hyper_param_search, saved["trial_params"],
                     run.args.learning_rate)
    assert seen[hf_lightning] == seen[transformers]
    assert seen[transformers][0] == {"learning_rate": 0.5}


@pytest.mark.parametrize("epochs", [0, -1])
def test_no_epochs_train_nothing_and_report_as_transformers(tmp_path, epochs):
    """``num_train_epochs`` 0 or below: no step, the train record of an empty run (transformers' result)."""
    seen = {}
    for lib in LIBS:
        run = trainer(lib, str(tmp_path / lib.__name__), num_train_epochs=epochs)
        result = run.train()
        seen[lib] = (result.global_step, result.training_loss, timeless(result.metrics),
                     [timeless(r) for r in run.state.log_history])
    assert seen[hf_lightning] == seen[transformers]
    assert seen[hf_lightning][0] == 0


def test_max_steps_zero_changes_no_weight_as_in_transformers(tmp_path):
    """``max_steps=0`` is step-based, not a fall-back to epochs: transformers runs one step at learning rate 0, which
    leaves the weights as they were; hf_lightning runs none (docs/parity.md). Either way the model is untouched."""
    weights = {}
    for lib in LIBS:
        run = trainer(lib, str(tmp_path / lib.__name__), max_steps=0)
        before = {k: v.clone() for k, v in run.model.state_dict().items()}
        run.train()
        assert run.state.max_steps == 0
        weights[lib] = {k: v.clone() for k, v in run.model.state_dict().items()}
        assert max_rel_diff(weights[lib], before) == 0.0
    assert max_rel_diff(weights[hf_lightning], weights[transformers]) == 0.0


def _overriding_trainers(lib: Any) -> dict[str, type]:
    """Trainer subclasses as ported scripts write them: an ``evaluate`` adding a metric (and a log record) to
    ``super().evaluate()``; transformers' question-answering example's ``evaluate`` (``evaluation_loop`` with
    ``compute_metrics`` set aside, the predictions post-processed, then its own record and ``on_evaluate``); an
    ``evaluation_loop`` adding a metric to ``super().evaluation_loop()``."""

    class AddsMetric(lib.Trainer):
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            metrics[f"{metric_key_prefix}_custom"] = -float(self.state.global_step)  # best: the first evaluation
            self.log({f"{metric_key_prefix}_extra": 1.0})
            return metrics

    class PostProcesses(lib.Trainer):
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            loader = self.get_eval_dataloader(eval_dataset)
            compute_metrics, self.compute_metrics = self.compute_metrics, None
            try:
                output = self.evaluation_loop(loader, description="Evaluation", prediction_loss_only=None,
                                              ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
            finally:
                self.compute_metrics = compute_metrics
            assert output.predictions is not None
            post = transformers.EvalPrediction(output.predictions * 2, output.label_ids)
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in compute_metrics(post).items()}
            metrics.update(output.metrics, samples=output.num_samples)
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    class ExtendsLoop(lib.Trainer):
        def evaluation_loop(self, *args, **kwargs):
            output = super().evaluation_loop(*args, **kwargs)
            output.metrics[f"{kwargs['metric_key_prefix']}_extra"] = float(output.num_samples)
            return output

    return {"adds_metric": AddsMetric, "post_processes": PostProcesses, "extends_loop": ExtendsLoop}


def _accuracy(pred: transformers.EvalPrediction) -> dict[str, float]:
    return {"accuracy": float((np.argmax(pred.predictions, axis=-1) == pred.label_ids).mean())}


def test_log_level_info_lines_of_a_question_answering_trainer_are_transformers(tmp_path):
    """``log_level="info"`` with transformers' question-answering example's ``evaluate`` (``evaluation_loop`` with
    ``description="Evaluation"``), ``max_steps`` beside ``num_train_epochs`` and a column the model does not take: the
    same lines on transformers' logger (the header names the loop's description; the note that ``max_steps``
    overrides the epochs; the ignored columns at each evaluation)."""
    def rows(n: int, seed: int) -> datasets.Dataset:
        return _marked_rows(n, seed, ()).add_column("example_id", [f"id{i}" for i in range(n)])

    lines = {}
    for lib in LIBS:
        out = str(tmp_path / lib.__name__)
        with _transformers_lines(out) as lines[lib]:
            args = lib.TrainingArguments(out, report_to=[], use_cpu=True, disable_tqdm=True, max_steps=4,
                                         per_device_train_batch_size=4, eval_strategy="steps", eval_steps=2,
                                         save_strategy="no", log_level="info", logging_steps=2)
            transformers.set_seed(0)
            model = transformers.BertForSequenceClassification(transformers.AutoConfig.for_model(**TINY_BERT))
            run = _overriding_trainers(lib)["post_processes"](model=model, args=args, train_dataset=rows(16, 1),
                                                              eval_dataset=rows(6, 2), compute_metrics=_accuracy)
            run.train()
            run.evaluate()
    assert lines[hf_lightning] == lines[transformers]
    assert lines[transformers].count("***** Running Evaluation *****") == 3
    assert "max_steps is given, it will override any value given in num_train_epochs" in lines[transformers]


@pytest.mark.parametrize("kind", ["adds_metric", "post_processes", "extends_loop"])
def test_overridden_evaluate_and_evaluation_loop_run_as_in_transformers(tmp_path, kind):
    """transformers' evaluations during training call the subclass's ``evaluate`` (its metrics choose the best
    checkpoint; ``on_evaluate`` resets the training's ``should_evaluate``), and ``evaluate`` / ``predict`` call an
    overridden ``evaluation_loop``: the records, the best checkpoint, predict() and a later evaluate() as transformers'."""
    best = {"adds_metric": "custom", "post_processes": "mae", "extends_loop": "extra"}[kind]
    seen = {}
    for lib in LIBS:
        args = lib.TrainingArguments(
            str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True, logging_steps=2,
            per_device_train_batch_size=8, per_device_eval_batch_size=5, max_steps=6, eval_strategy="steps",
            eval_steps=2, save_strategy="steps", save_steps=2, load_best_model_at_end=True,
            metric_for_best_model=best, greater_is_better=kind != "post_processes")
        transformers.set_seed(args.seed)
        run = _overriding_trainers(lib)[kind](model=StrictRegressionModel(), args=args,
                                              train_dataset=RegressionDataset(32),
                                              eval_dataset=RegressionDataset(16, seed=1), compute_metrics=mae)
        run.train()
        predicted = run.predict(RegressionDataset(7, seed=2))
        seen[lib] = {"records": [timeless(r) for r in run.state.log_history],
                     "best": run.state.best_model_checkpoint.rsplit("/", 1)[-1],
                     "predict": (predicted.predictions, predicted.label_ids, timeless(predicted.metrics)),
                     "evaluate": timeless(run.evaluate())}
    ours, theirs = seen[hf_lightning], seen[transformers]
    assert len(ours["records"]) == len(theirs["records"])
    for mine, expected in zip(ours["records"], theirs["records"], strict=True):
        assert_same_records(mine, expected)
    assert ours["best"] == theirs["best"]
    assert max_rel_diff(ours["predict"], theirs["predict"]) <= 1e-5
    assert sorted(ours["predict"][2]) == sorted(theirs["predict"][2])
    assert_same_records(ours["evaluate"], theirs["evaluate"])
    if kind == "adds_metric":  # chosen by the metric only the override returns (it is not logged)
        assert ours["best"] == "checkpoint-2" and "eval_custom" in ours["evaluate"]
    else:
        assert any(f"eval_{best}" in r for r in ours["records"])


class _SGDFromClass:
    """``get_optimizer_cls_and_kwargs`` overridden: plain SGD at the arguments' learning rate."""

    @staticmethod
    def get_optimizer_cls_and_kwargs(args, model=None):
        return torch.optim.SGD, {"lr": args.learning_rate, "momentum": 0.5}


def _subset_sampler(self, eval_dataset):
    return list(range(0, len(eval_dataset), 2)) if eval_dataset is not None else None


def _halved_inputs(self, inputs):
    inputs = super(type(self), self)._prepare_inputs(inputs)
    return {**inputs, "input_x": inputs["input_x"] * 0.5}


def _halved_input(self, data):
    data = super(type(self), self)._prepare_input(data)
    return data * 0.5 if torch.is_tensor(data) and data.is_floating_point() and data.dim() == 1 else data


def _extra_file(self, output_dir=None, state_dict=None):
    super(type(self), self)._save(output_dir, state_dict)
    Path(output_dir, "extra.txt").write_text(f"step {self.state.global_step}")


def _classic_training_step(self, model, inputs, num_items_in_batch=None):
    self.seen_num_items.append(num_items_in_batch)
    model.train()
    inputs = self._prepare_inputs(inputs)
    with self.compute_loss_context_manager():
        loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
    self.accelerator.backward(loss)
    return loss.detach()


def _counted_context(self):
    self.seen_num_items.append("loss context")
    return super(type(self), self).compute_loss_context_manager()


_OVERRIDES = {
    "_save": {"_save": _extra_file},
    "_get_train_sampler": {"_get_train_sampler": lambda self, train_dataset=None:
                           torch.utils.data.SequentialSampler(train_dataset)},
    "_get_eval_sampler": {"_get_eval_sampler": _subset_sampler},
    "_prepare_inputs": {"_prepare_inputs": _halved_inputs},
    "_prepare_input": {"_prepare_input": _halved_input},
    "floating_point_ops": {"floating_point_ops": lambda self, inputs: 1000.0},
    "get_optimizer_cls_and_kwargs": dict(vars(_SGDFromClass)),
    "training_step": {"training_step": _classic_training_step},
    "compute_loss_context_manager": {"compute_loss_context_manager": _counted_context},
}


@pytest.mark.parametrize("name", list(_OVERRIDES))
def test_overridden_transformers_methods_take_effect_as_in_transformers(tmp_path, name):
    """Methods ported subclasses override, each changing something observable: each checkpoint's files through
    ``_save``; the training order of ``_get_train_sampler``; the evaluated samples of ``_get_eval_sampler``; the
    inputs of ``_prepare_inputs`` / ``_prepare_input``; ``total_flos`` of ``floating_point_ops``; the optimizer of
    ``get_optimizer_cls_and_kwargs``; a pre-5.x ``training_step`` calling ``_prepare_inputs``,
    ``compute_loss_context_manager`` and ``accelerator.backward`` (and the ``num_items_in_batch`` it receives); the
    context ``compute_loss_context_manager`` opens around each loss (training and evaluation). The evaluation set is one batch: with a sampler that leaves samples out, transformers (accelerate's
    ``gather_for_metrics``) cuts the last batch's predictions to ``len(dataset) % batch size``."""
    seen = {}
    for lib in LIBS:
        out = tmp_path / lib.__name__
        cls = type(f"Ported_{name}", (lib.Trainer,), {k: v for k, v in _OVERRIDES[name].items()
                                                       if not k.startswith("__")})
        args = lib.TrainingArguments(str(out), report_to=[], use_cpu=True, disable_tqdm=True, logging_steps=1,
                                     learning_rate=0.1, per_device_train_batch_size=8, max_steps=4,
                                     eval_strategy="steps", eval_steps=2, save_steps=2)
        transformers.set_seed(args.seed)
        run = cls(model=StrictRegressionModel(), args=args, train_dataset=RegressionDataset(32),
                  eval_dataset=RegressionDataset(6, seed=1), compute_metrics=mae)
        run.seen_num_items = []
        run.train()
        predicted = run.predict(RegressionDataset(6, seed=2))
        run.save_model(str(out / "final"))
        files = {p.relative_to(out).as_posix(): p.read_text() if p.suffix == ".txt" else None
                 for p in out.rglob("*") if p.is_file() and p.name not in ("training_args.json", "training_args.bin")
                 and p.parent.name != "runs"}
        seen[lib] = {"records": [timeless(r) for r in run.state.log_history], "flos": run.state.total_flos,
                     "weights": {k: v.clone() for k, v in run.model.state_dict().items()},
                     "predict": (predicted.predictions, timeless(predicted.metrics)), "files": files,
                     "optimizer": type(getattr(run.optimizer, "optimizer", run.optimizer)).__name__,
                     "num_items": run.seen_num_items}
    ours, theirs = seen[hf_lightning], seen[transformers]
    for mine, expected in zip(ours["records"], theirs["records"], strict=True):
        assert_same_records(mine, expected)
    assert max_rel_diff(ours["weights"], theirs["weights"]) <= 1e-5
    assert max_rel_diff(ours["predict"], theirs["predict"]) <= 1e-5
    assert {k: ours[k] for k in ("flos", "files", "optimizer", "num_items")} == \
        {k: theirs[k] for k in ("flos", "files", "optimizer", "num_items")}
    changed = {"_save": "extra.txt" in str(ours["files"]), "floating_point_ops": ours["flos"] == 4000.0,
               "get_optimizer_cls_and_kwargs": ours["optimizer"] == "SGD",
               "training_step": len(ours["num_items"]) == 4, "_get_eval_sampler": ours["predict"][0].shape == (3,),
               "compute_loss_context_manager": ours["num_items"].count("loss context") >= 4}
    assert changed.get(name, True)


def test_an_override_the_training_loop_never_calls_is_named_in_a_warning():
    """transformers' own loop methods (``_inner_training_loop``, ...) are not run by hf_lightning's engine: a
    subclass overriding one is told so, with what to override instead; the methods it does call are not warned of."""
    class Custom(hf_lightning.Trainer):
        def _inner_training_loop(self, *args, **kwargs):
            raise AssertionError("never called")

        def compute_loss(self, *args, **kwargs):
            return super().compute_loss(*args, **kwargs)

        def _maybe_log_save_evaluate(self, *args, **kwargs):  # called (tests/parity/test_overrides.py)
            return super()._maybe_log_save_evaluate(*args, **kwargs)

    with pytest.warns(UserWarning, match=r"Custom overrides _inner_training_loop.*training_step") as caught:
        Custom(model=StrictRegressionModel(), args=hf_lightning.TrainingArguments("unused", report_to=[]))
    assert [str(w.message).split(",")[0] for w in caught if "hf_lightning's training loop" in str(w.message)] == \
        ["Custom overrides _inner_training_loop"]


def test_flos_and_search_attributes_read_as_in_transformers(tmp_path):
    """``current_flos`` / ``store_flos()``, ``get_batch_samples``, ``_signature_columns`` and the search attributes
    outside a search, before and after training."""
    seen = {}
    for lib in LIBS:
        run = trainer(lib, str(tmp_path / lib.__name__), max_steps=2)
        before = (run.current_flos, run.hp_search_backend, run.hp_name, run._signature_columns,
                  run.loss_is_scaled_for_ga)
        run.train()
        run.current_flos = 100
        run.store_flos()
        loader = run.get_train_dataloader()
        batches, count = run.get_batch_samples(iter(loader), 2, torch.device("cpu"))
        seen[lib] = (before, run.current_flos, run.state.total_flos, len(batches), count,
                     sorted(set(run._signature_columns)), run.hp_search_backend)
    assert seen[hf_lightning] == seen[transformers]
    assert seen[hf_lightning][2] == 100


def _peft_classification() -> tuple[Any, datasets.Dataset, Any]:
    """peft (the tests skip without it), 24 labelled token rows and a tiny BERT classifier's config."""
    peft = pytest.importorskip("peft")
    ids = np.random.default_rng(0).integers(5, 99, (24, 6))
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 0] % 2).tolist()})
    return peft, data, transformers.AutoConfig.for_model(**TINY_BERT, num_labels=2)


def test_a_peft_model_checkpoints_adapters_and_resumes_from_either_library_as_transformers(tmp_path):
    """A LoRA ``PeftModel``: each checkpoint and ``save_model`` write peft's adapter folder (``adapter_config.json``,
    ``adapter_model.safetensors``), as transformers does; ``PeftModel.from_pretrained`` loads the saved folder; a run
    resumed from the other library's middle checkpoint ends with the uninterrupted run's weights; the best checkpoint
    is loaded into the adapters at the end."""
    peft, data, config = _peft_classification()

    def lora(lib: Any, out: str, **args: Any) -> Any:
        transformers.set_seed(0)
        model = peft.get_peft_model(transformers.BertForSequenceClassification(config),
                                    peft.LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS"))
        training_args = lib.TrainingArguments(
            out, report_to=[], use_cpu=True, disable_tqdm=True, learning_rate=1e-2, per_device_train_batch_size=4,
            num_train_epochs=2, save_steps=3, eval_strategy="steps", eval_steps=3, load_best_model_at_end=True, **args)
        return lib.Trainer(model=model, args=training_args, train_dataset=data, eval_dataset=data.select(range(8)))

    seen = {}
    for lib in LIBS:
        run = lora(lib, str(tmp_path / lib.__name__))
        run.train()
        run.save_model(str(tmp_path / lib.__name__ / "final"))
        files = sorted(os.listdir(tmp_path / lib.__name__ / "checkpoint-3"))
        transformers.set_seed(0)  # the same base weights: the folder holds the adapters and the head
        loaded = peft.PeftModel.from_pretrained(transformers.BertForSequenceClassification(config),
                                                str(tmp_path / lib.__name__ / "final"))
        seen[lib] = {"files": [f for f in files if f != "training_args.json"], "best": run.state.best_model_checkpoint,
                     "weights": {k: v.clone() for k, v in run.model.state_dict().items()},
                     "loaded": {k: v.clone() for k, v in loaded.state_dict().items()}}
    ours, theirs = seen[hf_lightning], seen[transformers]
    assert ours["files"] == theirs["files"] and "adapter_model.safetensors" in ours["files"]
    assert "model.safetensors" not in ours["files"]
    assert ours["best"].rsplit("/", 1)[-1] == theirs["best"].rsplit("/", 1)[-1]
    assert max_rel_diff(ours["weights"], theirs["weights"]) <= 1e-5
    assert max_rel_diff(ours["loaded"], ours["weights"]) == 0.0
    for writer, reader in ((transformers, hf_lightning), (hf_lightning, transformers)):
        resumed = lora(reader, str(tmp_path / f"{writer.__name__}_by_{reader.__name__}"))
        resumed.train(resume_from_checkpoint=str(tmp_path / writer.__name__ / "checkpoint-6"))
        assert max_rel_diff({k: v for k, v in resumed.model.state_dict().items()}, seen[writer]["weights"]) <= 1e-5


@pytest.mark.parametrize("adapters", ["named", "several"])
def test_adapters_in_sub_folders_resume_and_load_best_as_transformers(tmp_path, adapters):
    """peft saves an adapter not named "default" (and, with several adapters, each but "default") in a sub-folder of
    its checkpoint. As transformers: a resume loads each adapter from its folder into the adapter of its name (was:
    "Can't find a valid checkpoint", or the top-level "default" weights loaded into the trained adapter), the best
    model is loaded from top-level adapter files only (else a warning, the run kept), and the model's mode after
    train() is transformers' (eval after a final evaluation or a loaded best adapter)."""
    peft, data, config = _peft_classification()

    def lora(lib: Any, out: str, **args: Any) -> Any:
        transformers.set_seed(0)
        lora_config = peft.LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS")
        base = transformers.BertForSequenceClassification(config)
        if adapters == "named":
            model = peft.get_peft_model(base, lora_config, adapter_name="mine")
        else:
            model = peft.get_peft_model(base, lora_config)
            model.add_adapter("other", peft.LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS"))
            model.set_adapter("other")
        training_args = lib.TrainingArguments(
            out, report_to=[], use_cpu=True, disable_tqdm=True, learning_rate=1e-2, per_device_train_batch_size=4,
            max_steps=6, save_steps=3, **args)
        return lib.Trainer(model=model, args=training_args, train_dataset=data, eval_dataset=data.select(range(8)))

    seen = {}
    for lib in LIBS:
        out = tmp_path / lib.__name__
        best = lora(lib, str(out / "best"), eval_strategy="steps", eval_steps=3, load_best_model_at_end=True,
                    metric_for_best_model="eval_loss", greater_is_better=True)  # the first evaluation is the best
        best.train()
        full = lora(lib, str(out / "full"))
        full.train()
        resumed = lora(lib, str(out / "resumed"))
        resumed.train(resume_from_checkpoint=str(out / "full" / "checkpoint-3"))
        seen[lib] = {"files": sorted(os.listdir(out / "full" / "checkpoint-3")),
                     "best": {k: v.clone() for k, v in best.model.state_dict().items()},
                     "best_mode": best.model.training, "full_mode": full.model.training,
                     "full": {k: v.clone() for k, v in full.model.state_dict().items()},
                     "resumed": {k: v.clone() for k, v in resumed.model.state_dict().items()}}
    ours, theirs = seen[hf_lightning], seen[transformers]
    assert [f for f in ours["files"] if f != "training_args.json"] == theirs["files"]
    assert ("mine" if adapters == "named" else "other") in theirs["files"]
    for key in ("best", "full", "resumed"):
        assert max_rel_diff(ours[key], theirs[key]) <= 1e-5, key
    assert max_rel_diff(ours["resumed"], ours["full"]) <= 1e-5
    assert (ours["best_mode"], ours["full_mode"]) == (theirs["best_mode"], theirs["full_mode"])


def test_changes_to_the_transformers_arguments_object_given_count_as_in_transformers(tmp_path):
    """A script that keeps its ``transformers.TrainingArguments`` and changes it after building the Trainer (one
    more epoch, then ``train(resume_from_checkpoint=True)``; a new eval batch size): transformers reads the object it
    was given, and so do these changes here (hf_lightning works on a copy of a transformers object)."""
    seen = {}
    for lib in LIBS:
        args = transformers.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True,
                                              disable_tqdm=True, per_device_train_batch_size=8, num_train_epochs=1,
                                              save_steps=2, logging_steps=2, learning_rate=0.1)
        transformers.set_seed(args.seed)
        run = lib.Trainer(model=StrictRegressionModel(), args=args, train_dataset=RegressionDataset(32),
                          eval_dataset=RegressionDataset(10, seed=1))
        run.train()
        args.num_train_epochs = 2
        args.per_device_eval_batch_size = 3
        result = run.train(resume_from_checkpoint=True)
        seen[lib] = (result.global_step, result.training_loss, run.evaluate()["eval_steps_per_second"] > 0,
                     len(run.get_eval_dataloader()),
                     {k: v.clone() for k, v in run.model.state_dict().items()})
    assert seen[hf_lightning][:4] == seen[transformers][:4] and seen[hf_lightning][0] == 8
    assert max_rel_diff(seen[hf_lightning][4], seen[transformers][4]) <= 1e-6


class _StopEpochAt(transformers.TrainerCallback):
    def __init__(self, step):
        self.step, self.events = step, []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.events.append(("epoch_begin", state.global_step))

    def on_epoch_end(self, args, state, control, **kwargs):
        self.events.append(("epoch_end", state.global_step))

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_epoch_stop = True


@pytest.mark.parametrize("max_steps", [7, 20])
def test_an_epoch_stop_under_max_steps_ends_the_passes_transformers_runs(tmp_path, max_steps):
    """With max_steps, transformers runs ceil(max_steps / steps per epoch) passes: an epoch stop in the last of them
    ends training (max_steps 7 fits the first 13-step pass); with two passes the second one runs whole and training
    ends there, short of max_steps."""
    outcomes = []
    for library in (transformers, hf_lightning):
        stop = _StopEpochAt(3)
        result = run(library.Trainer, StrictRegressionModel, RegressionDataset(length=39), tmp_path,
                     trainer_kwargs={"callbacks": [stop]}, per_device_train_batch_size=3, max_steps=max_steps,
                     learning_rate=0.05)
        outcomes.append((stop.events, result.global_step, result.trainer.state.epoch, result.train_loss))
    assert outcomes[1][:3] == outcomes[0][:3]
    assert outcomes[0][1] == (3 if max_steps == 7 else 3 + 13)  # the second pass whole, not on to max_steps
    assert max_rel_diff(outcomes[1][3], outcomes[0][3]) < 1e-6


def test_a_resume_that_saves_no_checkpoint_keeps_the_loaded_callback_states(tmp_path):
    """transformers replaces its state with the checkpoint's trainer_state.json on resume: its stateful_callbacks
    (the TrainerControl as it was saved) stay until the next checkpoint, and save_state() writes them."""
    written = {}
    for library in (transformers, hf_lightning):
        out = tmp_path / library.__name__
        common = dict(report_to=[], use_cpu=True, disable_tqdm=True, per_device_train_batch_size=8)
        for max_steps, save, resume in ((4, "steps", None), (6, "no", str(out / "checkpoint-4"))):
            transformers.set_seed(0)
            trainer = library.Trainer(model=StrictRegressionModel(), train_dataset=RegressionDataset(),
                                      args=library.TrainingArguments(str(out), max_steps=max_steps, save_steps=4,
                                                                     save_strategy=save, **common))
            trainer.train(resume_from_checkpoint=resume)
        trainer.save_state()
        written[library] = json.loads((out / "trainer_state.json").read_text())["stateful_callbacks"]
        assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]
    assert written[hf_lightning] == written[transformers]
    assert written[transformers]["TrainerControl"]["args"]["should_training_stop"]  # as saved at step 4


class _AskEvaluationAt1(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            control.should_evaluate = True


@pytest.mark.parametrize("case", ["evaluation_without_eval_set", "plateau_metric_missing"])
def test_errors_raised_during_training_as_transformers(tmp_path, case):
    """The same error, at the same step, with transformers' message: an evaluation a callback asks for without an
    eval set; a reduce_lr_on_plateau schedule whose metric (eval_loss) a dict of eval sets does not produce."""
    if case == "evaluation_without_eval_set":
        kwargs = dict(trainer_kwargs={"callbacks": [_AskEvaluationAt1()]}, save_strategy="steps", save_steps=2)
    else:
        kwargs = dict(eval_dataset={"a": RegressionDataset(length=8, seed=1), "b": RegressionDataset(length=8, seed=2)},
                      eval_strategy="steps", eval_steps=2, lr_scheduler_type="reduce_lr_on_plateau")
    raised = []
    for library in (transformers, hf_lightning):
        with pytest.raises((ValueError, KeyError)) as info:
            run(library.Trainer, StrictRegressionModel, RegressionDataset(length=24), tmp_path / library.__name__,
                per_device_train_batch_size=4, num_train_epochs=1, **kwargs)
        checkpoints = sorted(p.name for p in (tmp_path / library.__name__).rglob("checkpoint-*"))
        raised.append((type(info.value), str(info.value), checkpoints))
    assert raised[1] == raised[0]


def test_a_second_train_keeps_the_trainer_control_as_transformers(tmp_path):
    """One TrainerControl across train() calls: a stop requested in the first run is in the state the second starts
    with (its stateful_callbacks), as transformers snapshots its control before on_train_begin resets it."""
    class StopAt2(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                control.should_training_stop = True

    seen = []
    for library in (transformers, hf_lightning):
        result = run(library.Trainer, StrictRegressionModel, RegressionDataset(), tmp_path / library.__name__,
                     trainer_kwargs={"callbacks": [StopAt2()]}, per_device_train_batch_size=8, num_train_epochs=1)
        result.trainer.train()
        seen.append((result.trainer.state.stateful_callbacks["TrainerControl"], result.trainer.state.global_step))
    assert seen[1] == seen[0]


def test_a_train_after_one_that_raised_fires_each_event_once_as_transformers(tmp_path):
    """The first train() raises in a callback; the second train() of the same Trainer (same optimizer) fires
    on_optimizer_step once per step, with its own state (the interrupted fit's optimizer hook is gone)."""
    class RaiseOnce(transformers.TrainerCallback):
        def __init__(self):
            self.raised, self.steps = False, []

        def on_optimizer_step(self, args, state, control, **kwargs):
            self.steps.append(state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2 and not self.raised:
                self.raised = True
                raise RuntimeError("stop here")

    seen = []
    for library in (transformers, hf_lightning):
        callback = RaiseOnce()
        trainer = library.Trainer(model=StrictRegressionModel(), train_dataset=RegressionDataset(length=24),
                                  callbacks=[callback], args=library.TrainingArguments(
                                      str(tmp_path / library.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                      per_device_train_batch_size=8, num_train_epochs=1, save_strategy="no"))
        with pytest.raises(RuntimeError, match="stop here"):
            trainer.train()
        first = list(callback.steps)
        trainer.train()
        seen.append((first, callback.steps[len(first):]))
    assert seen[1] == seen[0] == ([0, 1], [0, 1, 2])
