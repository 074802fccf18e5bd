"""Data paths the other parity files do not take, each run with transformers.Trainer beside hf_lightning.Trainer on the
same model, data and seed: a torch data set whose items carry keys the model does not take, a ``labels`` column a
model's forward does not take, a resume at the end of a pass over an iterable data set, a resume inside an epoch with ``ignore_data_skip``, and the warnings of a plain run."""

from __future__ import annotations

import io
import logging
import random
import shutil
import sys
import warnings
from typing import Any

import datasets
import numpy as np
import pytest
import torch
import transformers
from transformers.utils import logging as hf_logging

import hf_lightning
from tests.helpers.tiny import TINY_BERT, IterableRegression, RegressionDataset, StrictRegressionModel
from tests.parity.harness import max_rel_diff

LIBS = (transformers, hf_lightning)


def trainer(lib: Any, out: str, train_dataset: Any = None, **args: Any) -> Any:
    base = {"report_to": [], "use_cpu": True, "disable_tqdm": True, "logging_steps": 1, "learning_rate": 0.1,
            "per_device_train_batch_size": 4, "num_train_epochs": 1, "save_strategy": "no"}
    kwargs = {"data_collator": args.pop("data_collator")} if "data_collator" in args else {}
    training_args = lib.TrainingArguments(out, **{**base, **args})
    transformers.set_seed(training_args.seed)
    return lib.Trainer(model=StrictRegressionModel(), args=training_args, train_dataset=train_dataset, **kwargs)


class _Indexed(RegressionDataset):
    """Items with the target as ``label`` (the default collator renames it) and an ``idx`` the model does not take."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = super().__getitem__(i)
        return {"input_x": item["input_x"], "label": item["labels"], "idx": i}


def test_a_torch_data_set_loses_the_keys_the_model_does_not_take_before_the_collator(tmp_path):
    """A torch ``Dataset`` (not a ``datasets`` one) has no columns to remove up front: transformers drops the unused
    keys of each item before the collator (``RemoveColumnsCollator``) in train(), evaluate() and predict(), keeps the
    label keys, and logs the ignored keys once per loader."""
    seen = {}
    for lib in LIBS:
        keys: list[list[str]] = []

        def collate(features: list[dict[str, Any]], keys: list = keys) -> Any:
            keys.append(sorted(features[0]))
            return transformers.default_data_collator(features)

        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        hf_logging.get_logger("transformers").addHandler(handler)
        try:
            run = trainer(lib, str(tmp_path / lib.__name__), _Indexed(16), data_collator=collate, log_level="info")
            result = run.train()
            metrics = run.evaluate(_Indexed(8, seed=1))
            predictions = run.predict(_Indexed(8, seed=2)).predictions
        finally:
            hf_logging.get_logger("transformers").removeHandler(handler)
            hf_logging.set_verbosity_warning()
        lines = [line for line in stream.getvalue().splitlines() if "don't have a corresponding argument" in line]
        seen[lib] = (keys, result.training_loss, metrics["eval_loss"], predictions, lines)
    ours, theirs = seen[hf_lightning], seen[transformers]
    assert ours[0] == theirs[0] and theirs[0][0] == ["input_x", "label"]
    assert max_rel_diff(list(ours[1:4]), list(theirs[1:4])) <= 1e-5
    assert ours[4] == theirs[4] and len(theirs[4]) == 3  # Training, Evaluation, test: once each
    assert "The following columns in the Training set" in theirs[4][0] and "ignored: idx." in theirs[4][0]


def test_a_torch_data_set_keeps_every_key_without_remove_unused_columns(tmp_path):
    errors = {}
    for lib in LIBS:
        run = trainer(lib, str(tmp_path / lib.__name__), _Indexed(8), remove_unused_columns=False)
        with pytest.raises(TypeError, match="unexpected keyword argument 'idx'") as info:
            run.train()
        errors[lib] = str(info.value)
    assert errors[hf_lightning] == errors[transformers]


class _NoLabels(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.ones(()))

    def forward(self, input_x: torch.Tensor) -> tuple:
        return (input_x * self.a,)


@pytest.mark.parametrize("as_datasets", [False, True], ids=["torch", "datasets"])
def test_labels_a_forward_does_not_take_are_an_unused_column(tmp_path, as_datasets):
    """The label names are those of the model's forward (none here): transformers drops a ``labels`` column like any
    other the forward does not take, and predicts without labels."""
    data = RegressionDataset(8)
    if as_datasets:
        data = datasets.Dataset.from_dict({"input_x": data.x, "labels": data.y})
    outputs = {}
    for lib in LIBS:
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True)
        outputs[lib] = lib.Trainer(model=_NoLabels(), args=args).predict(data)
    ours, theirs = outputs[hf_lightning], outputs[transformers]
    assert theirs.label_ids is None and ours.label_ids is None
    assert np.allclose(ours.predictions, theirs.predictions) and sorted(ours.metrics) == sorted(theirs.metrics)


class _Events(transformers.TrainerCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, int, float]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.events.append(("on_train_begin", state.global_step, round(state.epoch or 0, 4)))

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.events.append(("on_epoch_begin", state.global_step, round(state.epoch or 0, 4)))

    def on_step_end(self, args, state, control, **kwargs):
        self.events.append(("on_step_end", state.global_step, round(state.epoch or 0, 4)))

    def on_epoch_end(self, args, state, control, **kwargs):
        self.events.append(("on_epoch_end", state.global_step, round(state.epoch or 0, 4)))

    def on_train_end(self, args, state, control, **kwargs):
        self.events.append(("on_train_end", state.global_step, round(state.epoch or 0, 4)))


def test_a_resume_at_the_end_of_a_pass_over_an_iterable_data_set_begins_the_epoch_it_ends(tmp_path):
    """Three batches per pass, checkpoint-3 saved at the end of the first: transformers runs that epoch again, empty
    (on_epoch_begin, on_epoch_end), then the next; there is no on_epoch_end without its on_epoch_begin."""
    args = dict(max_steps=6, save_strategy="steps", save_steps=3)
    seen = {}
    for lib in LIBS:
        out = tmp_path / lib.__name__
        trainer(lib, str(out / "full"), IterableRegression(12), **args).train()
        shutil.copytree(out / "full" / "checkpoint-3", out / "part" / "checkpoint-3")
        run = trainer(lib, str(out / "part"), IterableRegression(12), **args)
        recorder = _Events()
        run.add_callback(recorder)
        run.train(resume_from_checkpoint=str(out / "part" / "checkpoint-3"))
        seen[lib] = (recorder.events, {k: v.clone() for k, v in run.model.state_dict().items()})
    ours, theirs = seen[hf_lightning], seen[transformers]
    assert ours[0] == theirs[0]
    assert [e[0] for e in theirs[0][:4]] == ["on_train_begin", "on_epoch_begin", "on_epoch_end", "on_epoch_begin"]
    assert max_rel_diff(ours[1], theirs[1]) <= 1e-5


def _warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return sorted({f"{w.category.__name__}: {w.message}" for w in caught})


def test_a_resume_inside_an_epoch_with_ignore_data_skip_warns_as_transformers(tmp_path):
    """``ignore_data_skip=True`` restarts the epoch from its first batch on purpose: no warning of Lightning's that
    the loader cannot resume inside an epoch (transformers has none)."""
    args = dict(num_train_epochs=2, save_strategy="steps", save_steps=2, ignore_data_skip=True)
    seen = {}
    for lib in LIBS:
        out = tmp_path / lib.__name__
        trainer(lib, str(out / "full"), RegressionDataset(16), **args).train()
        shutil.copytree(out / "full" / "checkpoint-2", out / "part" / "checkpoint-2")
        with warnings.catch_warnings(record=True) as caught:
            run = trainer(lib, str(out / "part"), RegressionDataset(16), **args)
            run.train(resume_from_checkpoint=str(out / "part" / "checkpoint-2"))
        seen[lib] = (_warnings(caught), run.state.log_history[-1]["train_loss"])
    assert seen[hf_lightning][0] == seen[transformers][0]
    assert max_rel_diff(seen[hf_lightning][1], seen[transformers][1]) <= 1e-5


@pytest.mark.parametrize("workers", [0, 1])
def test_a_plain_run_warns_only_where_transformers_warns(tmp_path, monkeypatch, workers):
    """train() without an eval set, evaluate() and predict(): none of Lightning's warnings (the empty list of
    validation loaders, Lightning's use of a pytree class newer torch deprecates, its advice to use more loader
    workers on a machine with many cores) where transformers warns of nothing."""
    from lightning.pytorch.trainer.connectors import data_connector

    monkeypatch.setattr(data_connector, "suggested_max_num_workers", lambda devices: 15)  # a 16-core machine
    seen = {}
    for lib in LIBS:
        with warnings.catch_warnings(record=True) as caught:  # the filters as they stand (pytest's, the libraries')
            run = trainer(lib, str(tmp_path / lib.__name__), RegressionDataset(16), dataloader_num_workers=workers)
            run.train()
            run.evaluate(RegressionDataset(8, seed=1))
            predictions = run.predict(RegressionDataset(8, seed=2)).predictions
        seen[lib] = (_warnings(caught), predictions)
    assert seen[hf_lightning][0] == seen[transformers][0]
    assert np.allclose(seen[hf_lightning][1], seen[transformers][1], atol=1e-6)


def test_multiple_choice_labels_beyond_num_labels_train_and_evaluate_as_in_transformers(tmp_path):
    """A multiple-choice model's label is the choice index, not bounded by ``config.num_labels`` (2 by default)."""
    rng = np.random.RandomState(0)
    data = datasets.Dataset.from_dict({"input_ids": rng.randint(5, 100, (8, 3, 6)).tolist(),
                                       "labels": [0, 1, 2, 0, 1, 2, 0, 1]})
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=37)
    seen = {}
    for lib in LIBS:
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, max_steps=2,
                                     per_device_train_batch_size=4, per_device_eval_batch_size=4, disable_tqdm=True)
        transformers.set_seed(0)
        run = lib.Trainer(model=transformers.BertForMultipleChoice(config), args=args, train_dataset=data,
                          eval_dataset=data)
        seen[lib] = (run.train().training_loss, run.evaluate()["eval_loss"])
    assert max_rel_diff(seen[hf_lightning], seen[transformers]) <= 1e-6, seen


def test_grouping_by_length_a_data_set_without_lengths_fails_as_in_transformers(tmp_path):
    """A torch data set with neither a length column nor the model's main input: transformers' own message."""
    messages = {}
    for lib in (transformers, hf_lightning):
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                     save_strategy="no", train_sampling_strategy="group_by_length")
        run = lib.Trainer(model=StrictRegressionModel(), args=args, train_dataset=RegressionDataset(16))
        with pytest.raises(ValueError) as raised:
            run.train()
        messages[lib] = str(raised.value)
    assert messages[hf_lightning] == messages[transformers]
    assert "'input_ids'" in messages[hf_lightning]


def test_batch_rebalance_feeds_transformers_batches_and_resumes_inside_an_epoch(tmp_path):
    """``train_sampling_strategy="batch_rebalance"``: transformers' cost-balanced micro-batches of variable size (the
    same samples in the same batches, accumulation windows and epochs), and a resume from a checkpoint inside an
    epoch going on with the batches an uninterrupted run trains on."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_lightning.data.resolve_model_path("minilm"))
    texts = [" ".join(["word"] * (3 + (7 * i) % 23)) for i in range(30)]
    data = datasets.Dataset.from_list([{**tokenizer(t), "label": i % 2} for i, t in enumerate(texts)])
    seen = {}
    for lib in LIBS:
        runs = []
        for resume in (None, "checkpoint-3"):
            shapes: list[tuple[int, ...]] = []

            def collate(features: list[dict[str, Any]], shapes: list = shapes) -> Any:
                batch = transformers.DataCollatorWithPadding(tokenizer)(features)
                shapes.append(tuple(batch["input_ids"].shape))
                return batch

            args = lib.TrainingArguments(
                str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True, num_train_epochs=2,
                per_device_train_batch_size=4, gradient_accumulation_steps=2, logging_steps=1, save_steps=3,
                train_sampling_strategy="batch_rebalance")
            transformers.set_seed(0)
            model = transformers.BertForSequenceClassification(transformers.AutoConfig.for_model(**TINY_BERT,
                                                                                                 num_labels=2))
            run = lib.Trainer(model=model, args=args, train_dataset=data, data_collator=collate)
            run.train(resume_from_checkpoint=str(tmp_path / lib.__name__ / resume) if resume else None)
            runs.append((shapes, run.state.max_steps, [(r.get("epoch"), r["step"]) for r in run.state.log_history]))
        seen[lib] = runs
    assert seen[hf_lightning] == seen[transformers]
    (whole, steps, _), (resumed, _, _) = seen[hf_lightning]
    assert steps == 8 and len({size for size, _ in whole}) > 1  # micro-batches of variable size
    assert resumed == whole[6:]  # 3 steps x 2 micro-batches skipped


def test_a_shuffled_stream_is_shuffled_anew_each_pass_as_in_transformers(tmp_path):
    """A ``datasets.IterableDataset`` with ``.shuffle(seed, buffer_size)`` and ``max_steps`` beyond one pass: each pass
    gets the next epoch (``set_epoch``), so its order differs from the first pass's, and is transformers' order."""
    seen = {}
    for lib in LIBS:
        rows = datasets.Dataset.from_dict({"input_x": [float(i) for i in range(10)],
                                           "labels": [0.5 * i for i in range(10)]})
        stream = rows.to_iterable_dataset(num_shards=1).shuffle(seed=0, buffer_size=4)
        order: list[list[int]] = []

        def collate(features: list[dict[str, Any]], order: list = order) -> dict[str, torch.Tensor]:
            order.append([int(f["input_x"]) for f in features])
            return {k: torch.tensor([f[k] for f in features]) for k in features[0]}

        run = trainer(lib, str(tmp_path / lib.__name__), stream, max_steps=6, data_collator=collate)
        run.train()
        seen[lib] = (order, [r.get("loss") for r in run.state.log_history])
    assert seen[hf_lightning][0] == seen[transformers][0]
    assert max_rel_diff(seen[hf_lightning][1][:-1], seen[transformers][1][:-1]) <= 1e-6
    first, second = seen[hf_lightning][0][:3], seen[hf_lightning][0][3:]
    assert sorted(i for batch in first for i in batch) == sorted(i for batch in second for i in batch) \
        == list(range(10))
    assert first != second


def test_padding_free_batches_weigh_their_samples_in_eval_loss_as_in_transformers(tmp_path):
    """``DataCollatorWithFlattening`` packs a batch's samples into one row: transformers still weighs each batch's
    loss by its samples (the eval batch size, the rest for the last batch), so 7 samples in batches of 3 weigh
    3, 3, 1, and ``compute_metrics`` gets one loss per sample; the same records, evaluate() and predict()."""
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                                      pad_token_id=0, bos_token_id=1, eos_token_id=1)
    rng = np.random.RandomState(1)
    texts = datasets.Dataset.from_list([{"input_ids": rng.randint(4, 50, size=rng.randint(3, 15)).tolist()}
                                        for _ in range(11)])
    train, held_out = texts.select(range(4)), texts.select(range(4, 11))
    transformers.set_seed(0)
    init = transformers.LlamaForCausalLM(config).state_dict()
    seen = {}
    for lib in LIBS:
        model = transformers.LlamaForCausalLM(config)
        model.load_state_dict(init)
        counts: list[int] = []

        def losses_per_sample(prediction: Any, counts: list = counts) -> dict[str, float]:
            counts.append(len(prediction.losses))
            return {"mean_sample_loss": float(np.mean(prediction.losses))}

        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                     per_device_train_batch_size=2, per_device_eval_batch_size=3, num_train_epochs=1,
                                     eval_strategy="epoch", logging_steps=1, save_strategy="no",
                                     include_for_metrics=["loss"])
        run = lib.Trainer(model=model, args=args, train_dataset=train, eval_dataset=held_out,
                          data_collator=transformers.DataCollatorWithFlattening(), compute_metrics=losses_per_sample)
        run.train()
        final = run.evaluate()
        predicted = run.predict(held_out)
        seen[lib] = ([{k: v for k, v in r.items() if "runtime" not in k and "per_second" not in k}
                      for r in run.state.log_history],
                     {k: v for k, v in final.items() if "runtime" not in k and "per_second" not in k},
                     {k: v for k, v in predicted.metrics.items() if "runtime" not in k and "per_second" not in k},
                     counts)
    assert seen[hf_lightning][3] == seen[transformers][3] == [7, 7, 7]
    for ours, theirs in zip(seen[hf_lightning][:3], seen[transformers][:3], strict=True):
        assert (sorted(ours[0]) if isinstance(ours, list) else sorted(ours)) == \
            (sorted(theirs[0]) if isinstance(theirs, list) else sorted(theirs))
        assert max_rel_diff(ours, theirs) < 1e-5


class _SizedStream(IterableRegression):
    def __len__(self) -> int:
        return len(self.data)


@pytest.mark.parametrize("sized", [False, True], ids=["stream", "stream-with-length"])
def test_drop_last_keeps_the_short_last_batch_of_a_stream_as_in_transformers(tmp_path, sized):
    """``dataloader_drop_last`` cuts the batches of a sampler: transformers does not apply it to a stream (a torch
    ``IterableDataset``), whose short last batch is trained on: 4 steps per pass of 10 samples in batches of 3 (by
    max_steps, or two epochs of a stream that has a length)."""
    seen = {}
    for lib in LIBS:
        data, length = (_SizedStream(10), {"num_train_epochs": 2}) if sized else (IterableRegression(10),
                                                                                   {"max_steps": 9})
        run = trainer(lib, str(tmp_path / lib.__name__), data, per_device_train_batch_size=3,
                      dataloader_drop_last=True, **length)
        run.train()
        seen[lib] = ([{k: v for k, v in r.items() if "runtime" not in k and "per_second" not in k}
                      for r in run.state.log_history], {k: v.clone() for k, v in run.model.state_dict().items()})
    assert len(seen[hf_lightning][0]) == len(seen[transformers][0]) == (9 if sized else 10)  # steps and summary
    assert max_rel_diff(seen[hf_lightning][0], seen[transformers][0]) < 1e-6
    assert max_rel_diff(seen[hf_lightning][1], seen[transformers][1]) < 1e-6


class _Augmented(RegressionDataset):
    """Inputs augmented in the data set with draws from python's ``random`` and numpy's global stream (as
    ``random.randint`` crops and albumentations do), in the loader's worker processes."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = super().__getitem__(i)
        return {"input_x": np.float32(item["input_x"] + random.gauss(0, 0.5) + np.random.normal(0, 0.5)),
                "labels": item["labels"]}


def test_loader_workers_draw_augmentations_from_transformers_seeds(tmp_path):
    """With ``dataloader_num_workers``, transformers seeds each training worker's python, numpy and torch streams
    from its torch seed (``seed_worker``): augmentations drawing from ``random`` / ``numpy`` in the workers train
    to the same records and weights."""
    seen = {}
    for lib in LIBS:
        run = trainer(lib, str(tmp_path / lib.__name__), _Augmented(24), dataloader_num_workers=2,
                      num_train_epochs=2)
        run.train()
        seen[lib] = ([{k: v for k, v in r.items() if "runtime" not in k and "per_second" not in k}
                      for r in run.state.log_history], {k: v.clone() for k, v in run.model.state_dict().items()})
    assert len(seen[hf_lightning][0]) == len(seen[transformers][0]) == 13  # 12 steps and the summary
    assert max_rel_diff(seen[hf_lightning][0], seen[transformers][0]) < 1e-6
    assert max_rel_diff(seen[hf_lightning][1], seen[transformers][1]) < 1e-6


class _Detector(torch.nn.Module):
    """A detector's interface: ``labels`` is a list of per-image dicts (``boxes`` of each image's objects)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, pixels: torch.Tensor, labels: list[dict[str, torch.Tensor]] | None = None) -> dict:
        logits = pixels * self.w
        return {"loss": logits.mean(), "logits": logits}


def _detections(n: int) -> list[dict[str, Any]]:
    return [{"pixels": torch.full((2,), float(i)), "labels": {"boxes": torch.ones(3, 4) * i}} for i in range(n)]


@pytest.mark.parametrize("concat", [False, True], ids=["per-batch", "concatenated"])
def test_per_sample_dict_labels_reach_compute_metrics_whole(tmp_path, concat):
    """Deliberate difference (parity.md, 20): labels that are a list of per-image dicts (object detection) reach
    ``compute_metrics`` as collated; transformers cuts every tensor of the last batch's dicts to
    ``len(eval_dataset) % batch size`` rows, dropping ground-truth boxes. The loss and predictions agree."""
    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"pixels": torch.stack([i["pixels"] for i in items]), "labels": [i["labels"] for i in items]}

    seen = {}
    for lib in LIBS:
        boxes: list[int] = []

        def count_boxes(prediction: Any, boxes: list = boxes) -> dict[str, float]:
            batches = prediction.label_ids if not concat else [prediction.label_ids]
            boxes.extend(len(label["boxes"]) for batch in batches for label in
                         (batch if isinstance(batch, list) else [batch]))
            return {"images": float(len(prediction.predictions))}

        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                     per_device_eval_batch_size=3, remove_unused_columns=False,
                                     eval_do_concat_batches=concat)
        metrics = lib.Trainer(model=_Detector(), args=args, eval_dataset=_detections(7), data_collator=collate,
                              compute_metrics=count_boxes).evaluate()
        seen[lib] = (boxes, {k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second",
                                                                                 "_preparation_time"))})
    assert seen[hf_lightning][1] == seen[transformers][1]  # eval_loss and the predictions' count
    if concat:  # both join the batches' lists index by index (images 0, 3 and 6): transformers' image 6 keeps 1 box
        assert seen[hf_lightning][0] == [9] and seen[transformers][0] == [7]
    else:
        assert seen[hf_lightning][0] == [3] * 7 and seen[transformers][0] == [3] * 6 + [1]


def test_a_training_loader_without_a_batch_ends_as_in_transformers(tmp_path):
    """Fewer training samples than a batch with ``dataloader_drop_last``: no step is taken; transformers counts an
    endless epoch (``num_train_epochs`` sys.maxsize) and logs a zero-step summary; the same state and records."""
    seen = {}
    for lib in LIBS:
        run = trainer(lib, str(tmp_path / lib.__name__), RegressionDataset(3), dataloader_drop_last=True, max_steps=5)
        run.train()
        seen[lib] = (run.state.num_train_epochs, run.state.global_step, run.state.max_steps,
                     [{k: v for k, v in r.items() if "runtime" not in k and "per_second" not in k}
                      for r in run.state.log_history])
    assert seen[hf_lightning] == seen[transformers]
    assert seen[transformers][:2] == (sys.maxsize, 0)
