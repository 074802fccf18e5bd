"""hf_lightning.Seq2SeqTrainer beside transformers.Seq2SeqTrainer: training, generation in evaluate / predict."""

from __future__ import annotations

import datasets
import numpy as np
import torch
import transformers

import hf_lightning
from tests.parity.harness import max_rel_diff, strip_speed

T5 = transformers.T5Config(vocab_size=40, d_model=16, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8,
                           dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def _data(n: int, seed: int) -> datasets.Dataset:
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        source = torch.randint(2, 40, (int(torch.randint(3, 9, (1,), generator=gen)),), generator=gen).tolist()
        rows.append({"input_ids": source + [1], "labels": source[::-1][:4] + [1]})  # learnable: reversed prefix
    return datasets.Dataset.from_list(rows)


def _collate(features: list[dict]) -> dict[str, torch.Tensor]:
    def pad(key: str, value: int) -> torch.Tensor:
        width = max(len(f[key]) for f in features)
        return torch.tensor([f[key] + [value] * (width - len(f[key])) for f in features])

    ids = pad("input_ids", 0)
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": pad("labels", -100)}


def _exact(pred: transformers.EvalPrediction) -> dict[str, float]:
    preds, labels = pred.predictions, pred.label_ids
    return {"first_token": float((preds[:, 1] == labels[:, 0]).mean())}


def _run(trainer_cls, args_cls, tmp_path, **extra):
    args = args_cls(str(tmp_path), per_device_train_batch_size=4, num_train_epochs=2, learning_rate=1e-2,
                    report_to=[], use_cpu=True, save_strategy="no", logging_steps=2, disable_tqdm=True,
                    eval_strategy="epoch", predict_with_generate=True, generation_max_length=6,
                    per_device_eval_batch_size=4, **extra)
    transformers.set_seed(args.seed)
    trainer = trainer_cls(model=transformers.T5ForConditionalGeneration(T5), args=args, train_dataset=_data(16, 0),
                          eval_dataset=_data(6, 1), data_collator=_collate, compute_metrics=_exact)
    trainer.train()
    metrics = trainer.evaluate(num_beams=2)
    preds = trainer.predict(_data(5, 2), max_new_tokens=3)
    return trainer, metrics, preds


def _batch_losses(model: torch.nn.Module, ds: datasets.Dataset, size: int) -> tuple[list[float], list[int]]:
    model.eval()
    losses, sizes = [], []
    for start in range(0, len(ds), size):
        batch = _collate([ds[i] for i in range(start, min(start + size, len(ds)))])
        with torch.no_grad():
            losses.append(float(model(**batch).loss))
        sizes.append(len(batch["labels"]))
    return losses, sizes


def test_seq2seq_trainer_matches_transformers(tmp_path):
    hf, hf_metrics, hf_preds = _run(transformers.Seq2SeqTrainer, transformers.Seq2SeqTrainingArguments, tmp_path / "a")
    ours, metrics, preds = _run(hf_lightning.Seq2SeqTrainer, hf_lightning.Seq2SeqTrainingArguments, tmp_path / "b")
    assert max_rel_diff(ours.model.state_dict(), hf.model.state_dict()) < 1e-5
    no_loss = lambda rows: [{k: v for k, v in r.items() if k != "eval_loss"} for r in strip_speed(rows)]
    assert max_rel_diff(no_loss(ours.state.log_history), no_loss(hf.state.log_history)) < 1e-5
    assert {k for k in metrics if "runtime" not in k and "per_second" not in k} == \
        {k for k in hf_metrics if "runtime" not in k and "per_second" not in k}
    assert metrics["eval_first_token"] == hf_metrics["eval_first_token"]
    np.testing.assert_array_equal(preds.predictions, hf_preds.predictions)  # generated ids, padded alike
    assert preds.predictions.shape == hf_preds.predictions.shape == (5, 20)  # padded to generation max_length
    # eval_loss: hf_lightning weights each batch by its size (as transformers.Trainer does); transformers'
    # Seq2SeqTrainer 5.23 counts the short last batch (2 of 6 samples, batch 4) as a full one.
    losses, sizes = _batch_losses(ours.model, _data(6, 1), 4)
    assert metrics["eval_loss"] == np.float64(np.average(losses, weights=sizes)).item() or \
        abs(metrics["eval_loss"] - np.average(losses, weights=sizes)) < 1e-6
    assert abs(hf_metrics["eval_loss"] - np.mean(losses)) < 1e-6


def test_a_compiled_model_trains_evaluates_and_generates_as_transformers(tmp_path):
    """torch_compile=True (TorchDynamo with the eager backend: the capture, without code generation) in both
    Seq2SeqTrainers: the same weights, evaluation metrics and generated ids; the model handed back is uncompiled."""
    compiled = {"torch_compile": True, "torch_compile_backend": "eager"}
    hf, hf_metrics, hf_preds = _run(transformers.Seq2SeqTrainer, transformers.Seq2SeqTrainingArguments, tmp_path / "a",
                                    **compiled)
    ours, metrics, preds = _run(hf_lightning.Seq2SeqTrainer, hf_lightning.Seq2SeqTrainingArguments, tmp_path / "b",
                                **compiled)
    assert not hasattr(ours.model, "_orig_mod")
    assert max_rel_diff(ours.model.state_dict(), hf.model.state_dict()) < 1e-5
    assert metrics["eval_first_token"] == hf_metrics["eval_first_token"]
    np.testing.assert_array_equal(preds.predictions, hf_preds.predictions)


def test_generation_config_applies_when_the_trainer_is_built_as_in_transformers(tmp_path):
    """``args.generation_config`` replaces the model's when the Seq2SeqTrainer is built (validated strictly there);
    a model that ``model_init`` builds in ``train()`` keeps its own; ``predict_with_generate`` switched on later on
    ``trainer.args`` counts in the next ``predict()``."""
    config = transformers.GenerationConfig(max_length=4, num_beams=2, decoder_start_token_id=0, pad_token_id=0,
                                           eos_token_id=1)
    seen = {}
    for lib in (transformers, hf_lightning):
        def args(out, lib=lib, **extra):
            return lib.Seq2SeqTrainingArguments(str(tmp_path / lib.__name__ / out), report_to=[], use_cpu=True,
                                                per_device_eval_batch_size=2, max_steps=2, **extra)

        transformers.set_seed(0)
        built = lib.Seq2SeqTrainer(model=transformers.T5ForConditionalGeneration(T5),
                                   args=args("a", generation_config=config), data_collator=_collate)
        at_init = (built.model.generation_config.max_length, built.model.generation_config.num_beams,
                   built.model.generation_config._from_model_config)
        built.args.predict_with_generate = True
        generated = built.predict(_data(4, 2)).predictions
        with_init = lib.Seq2SeqTrainer(model_init=lambda: transformers.T5ForConditionalGeneration(T5),
                                       args=args("b", generation_config=config, predict_with_generate=True),
                                       train_dataset=_data(8, 0), data_collator=_collate)
        with_init.train()
        try:
            lib.Seq2SeqTrainer(model=transformers.T5ForConditionalGeneration(T5), data_collator=_collate,
                               args=args("c", generation_config=transformers.GenerationConfig(temperature=0.5)))
            invalid = None
        except ValueError as err:
            invalid = str(err).split("\n")[-1]
        seen[lib] = (at_init, generated, with_init.model.generation_config.max_length, invalid)
    ours, theirs = seen[hf_lightning], seen[transformers]
    assert ours[0] == theirs[0] == (4, 2, None)
    np.testing.assert_array_equal(ours[1], theirs[1])
    assert ours[2] == theirs[2] and ours[3] == theirs[3] == "Fix these issues to train your model."


def test_a_subclass_calling_super_prediction_step_still_generates_as_in_transformers(tmp_path):
    """An override of ``prediction_step`` that calls ``super()`` gets ``Seq2SeqTrainer``'s (generating) step, also
    when called directly with generation keywords."""
    seen = {}
    for lib in (transformers, hf_lightning):
        calls: list[dict] = []

        class Recording(lib.Seq2SeqTrainer):
            def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, calls=calls,
                                **gen_kwargs):
                calls.append(sorted(gen_kwargs))
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys,
                                               **gen_kwargs)

        args = lib.Seq2SeqTrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True,
                                            predict_with_generate=True, generation_max_length=6, disable_tqdm=True)
        transformers.set_seed(0)
        run = Recording(model=transformers.T5ForConditionalGeneration(T5), args=args, data_collator=_collate)
        predicted = run.predict(_data(3, 2)).predictions
        batch = {k: v for k, v in _collate([_data(3, 2)[i] for i in range(3)]).items()}
        _, direct, _ = run.prediction_step(run.model, batch, False, max_new_tokens=2)
        seen[lib] = (predicted.tolist(), direct.tolist(), calls)
    assert seen[hf_lightning] == seen[transformers]
    assert np.asarray(seen[transformers][0]).dtype == np.int64 and np.asarray(seen[transformers][1]).ndim == 2  # ids
