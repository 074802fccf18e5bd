"""Text models beside transformers.Trainer: a tiny BERT classifier, and a token-level loss under accumulation."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
import transformers

import hf_lightning
from tests.helpers.tiny import TINY_BERT, tiny_text_dataset
from tests.parity.harness import assert_same, both, max_rel_diff, run

TINY_GPT2 = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32, resid_pdrop=0.0,
                                    embd_pdrop=0.0, attn_pdrop=0.0)


def _bert_classifier(dropout: float = 0.1) -> torch.nn.Module:
    config = transformers.AutoConfig.for_model(**{**TINY_BERT, "num_labels": 2, "hidden_dropout_prob": dropout,
                                                  "attention_probs_dropout_prob": dropout})
    return transformers.BertForSequenceClassification(config)


def _tokenized(n: int, seed: int) -> datasets.Dataset:
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_lightning.data.resolve_model_path("minilm"))
    ds = tiny_text_dataset(n, seed)
    return ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=16), batched=True)


def _accuracy(pred: transformers.EvalPrediction) -> dict[str, float]:
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


@pytest.mark.parametrize("smoothing", [0.1, 1.0])
def test_tiny_bert_classifier_with_label_smoothing_and_metrics(tmp_path, smoothing):
    """Label smoothing 0.1, and 1.0 (uniform targets), which transformers' LabelSmoother also takes."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_lightning.data.resolve_model_path("minilm"))
    hf, ours = both(_bert_classifier, _tokenized(48, 0), tmp_path, eval_dataset=_tokenized(20, 1), evaluate=True,
                    predict_dataset=_tokenized(12, 2),
                    trainer_kwargs={"processing_class": tokenizer, "compute_metrics": _accuracy},
                    per_device_train_batch_size=8, num_train_epochs=2, learning_rate=1e-3,
                    label_smoothing_factor=smoothing,
                    eval_strategy="epoch", per_device_eval_batch_size=8, warmup_steps=0.2, weight_decay=0.01)
    worst = assert_same(hf, ours, rtol=1e-5)
    assert "eval_accuracy" in ours.eval_metrics and ours.predictions.predictions.shape == (12, 2)
    assert worst < 1e-5


class ScaledLogitsLoss:
    """An overridden compute_loss with its own arithmetic on the logits (run in float32 outside autocast)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = torch.nn.functional.cross_entropy(outputs.logits * 1.7, labels) + outputs.logits.pow(2).mean() * 0.01
        return (loss, outputs) if return_outputs else loss


@pytest.mark.parametrize("setting", ["model_loss", "label_smoothing", "compute_loss", "reentrant_checkpointing"])
def test_bf16_mixed_precision_autocasts_the_forward_only_as_transformers(tmp_path, setting):
    """bf16 autocast (on the CPU here) around the model's forward only, its outputs in float32: a label smoother or an
    overridden compute_loss works on float32 logits outside autocast, as with accelerate in transformers (the
    model's own loss: in float32 as transformers' converted outputs, the logits left in bfloat16). Records,
    weights, eval metrics and predictions agree to float32 rounding (the step's loss under whole-step autocast
    differed by about 3e-3). With reentrant activation checkpointing the model's own loss trains under autocast with
    accelerate's weight-cast cache, which the recomputation in backward records (Lightning's region has it off)."""
    args = dict(bf16=True, per_device_train_batch_size=8, num_train_epochs=1, learning_rate=3e-3,
                per_device_eval_batch_size=8, eval_strategy="epoch")
    extra: dict = {"label_smoothing_factor": 0.2} if setting == "label_smoothing" else \
        {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": True}} \
        if setting == "reentrant_checkpointing" else {}
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_lightning.data.resolve_model_path("minilm"))
    runs = []
    for library in (transformers, hf_lightning):
        cls = type("T", (ScaledLogitsLoss, library.Trainer), {}) if setting == "compute_loss" else library.Trainer
        runs.append(run(cls, lambda: _bert_classifier(0.0), _tokenized(32, 0), tmp_path, evaluate=True,
                        eval_dataset=_tokenized(16, 1), predict_dataset=_tokenized(8, 2),
                        trainer_kwargs={"processing_class": tokenizer}, **args, **extra))
    hf, ours = runs
    assert ours.predictions.predictions.dtype == hf.predictions.predictions.dtype == np.float32
    assert_same(hf, ours, rtol=1e-5)


def _lm_dataset(n: int, seed: int) -> datasets.Dataset:
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(3, 20, (1,), generator=gen))
        rows.append({"input_ids": torch.randint(1, 50, (length,), generator=gen).tolist()})
    return datasets.Dataset.from_list(rows)


def _pad_lm(features: list[dict]) -> dict[str, torch.Tensor]:
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros(len(features), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, f in enumerate(features):
        ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        mask[i, : len(f["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def _gpt2(loss_type: str | None = "ForCausalLM") -> torch.nn.Module:
    model = transformers.GPT2LMHeadModel(TINY_GPT2)
    model.loss_type = loss_type  # set: transformers.Trainer then counts shifted labels (None: see the test below)
    return model


LM = dict(num_train_epochs=2, learning_rate=3e-3, trainer_kwargs={"data_collator": _pad_lm})


def test_token_loss_with_variable_padding_under_accumulation(tmp_path):
    """Sequences of 3-19 tokens: the loss over the window's tokens (num_items_in_batch, shifted labels)."""
    data = _lm_dataset(30, 0)
    hf, ours = both(_gpt2, data, tmp_path / "acc", per_device_train_batch_size=2, gradient_accumulation_steps=4, **LM)
    assert_same(hf, ours, rtol=1e-5)
    # The correct answer: the same as one batch of 8 without accumulation (30 samples: last window 3 batches / 6).
    big = run(hf_lightning.Trainer, _gpt2, data, tmp_path / "big", per_device_train_batch_size=8, **LM)
    # Different batch shapes sum in a different float order; Adam turns those last-bit differences of near-zero
    # gradient entries into updates of a few 1e-4 of the largest weight. The losses agree to 1e-5 at every step.
    assert max_rel_diff(ours.weights, big.weights) < 1e-3
    for a, b in zip(ours.log_history[:-1], big.log_history[:-1]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_causal_lm_without_loss_type_counts_shifted_labels(tmp_path):
    """GPT-2 leaves loss_type None: transformers 5.23 then counts labels != -100 without the shift (one token per
    sequence too many), so its accumulated loss is scaled down; hf_lightning counts what the loss sums over."""
    data = _lm_dataset(16, 1)
    untyped = lambda: _gpt2(None)
    hf, ours = both(untyped, data, tmp_path / "u", per_device_train_batch_size=2, gradient_accumulation_steps=2,
                    **dict(LM, num_train_epochs=1))
    typed = run(hf_lightning.Trainer, _gpt2, data, tmp_path / "t", per_device_train_batch_size=2,
                gradient_accumulation_steps=2, **dict(LM, num_train_epochs=1))
    assert [r["loss"] for r in ours.log_history[:-1]] == pytest.approx([r["loss"] for r in typed.log_history[:-1]],
                                                                         rel=1e-6)
    assert all(h["loss"] < o["loss"] for h, o in zip(hf.log_history[:-1], ours.log_history[:-1]))


def test_mean_loss_classifier_under_accumulation_equals_the_large_batch(tmp_path):
    """BERT's classification loss ignores num_items_in_batch although its forward takes **kwargs: transformers 5.x
    multiplies it by GA there; hf_lightning's accumulated run equals the batch-8 run."""
    data = _tokenized(32, 0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_lightning.data.resolve_model_path("minilm"))
    kwargs = dict(num_train_epochs=1, learning_rate=1e-3, trainer_kwargs={"processing_class": tokenizer})
    no_dropout = lambda: _bert_classifier(0.0)
    acc = run(hf_lightning.Trainer, no_dropout, data, tmp_path / "a", per_device_train_batch_size=4,
              gradient_accumulation_steps=2, **kwargs)
    big = run(hf_lightning.Trainer, no_dropout, data, tmp_path / "b", per_device_train_batch_size=8, **kwargs)
    hf_acc = run(transformers.Trainer, no_dropout, data, tmp_path / "c", per_device_train_batch_size=4,
                 gradient_accumulation_steps=2, **kwargs)
    assert [r["loss"] for r in acc.log_history[:-1]] == pytest.approx([r["loss"] for r in big.log_history[:-1]],
                                                                        rel=1e-4)
    ratio = np.array([r["loss"] for r in hf_acc.log_history[:-1]]) / np.array([r["loss"] for r in acc.log_history[:-1]])
    assert ratio[0] == pytest.approx(2.0, rel=1e-4)  # the documented transformers difference


def test_same_weights_through_the_lightning_door(tmp_path):
    """HFModule + HFDataModule + lightning.Trainer (what `python -m hf_lightning fit` builds) == transformers.Trainer."""
    import lightning as L

    data = _lm_dataset(20, 3)
    hf = run(transformers.Trainer, _gpt2, data, tmp_path / "hf", per_device_train_batch_size=2,
             gradient_accumulation_steps=2, **LM)
    transformers.set_seed(42)
    module = hf_lightning.HFModule(model=_gpt2(), task="causal-lm",
                                   optimization=hf_lightning.OptimizerSettings(learning_rate=3e-3))
    dm = hf_lightning.HFDataModule(dataset=data, collator=_pad_lm, batch_size=2, validation_size=0, test_size=0,
                                   tokenize=False)
    flow = hf_lightning.HFFlow(logging_steps=1)
    trainer = L.Trainer(max_epochs=2, accumulate_grad_batches=2, callbacks=[flow], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, use_distributed_sampler=False)
    trainer.fit(module, dm)
    assert max_rel_diff(module.model.state_dict(), hf.weights) < 1e-5
    losses = [r["loss"] for r in flow.state.log_history if "loss" in r]
    assert losses == pytest.approx([r["loss"] for r in hf.log_history if "loss" in r], rel=1e-5)


def test_masked_lm_with_dropout_draws_masks_and_dropout_in_transformers_order(tmp_path):
    """DataCollatorForLanguageModeling masks from the global RNG and the model's dropout draws from it too:
    transformers.Trainer collates each batch one draw ahead of training on it (accelerate's DataLoaderShard), and so
    does hf_lightning, so both see the same masks and dropout, with and without accumulation."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_lightning.data.resolve_model_path("minilm"))
    data = _tokenized(24, 0).remove_columns(["text", "label"])

    def mlm() -> torch.nn.Module:
        config = transformers.AutoConfig.for_model(**{**TINY_BERT, "hidden_dropout_prob": 0.1,
                                                      "attention_probs_dropout_prob": 0.1})
        return transformers.BertForMaskedLM(config)

    collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3)
    kwargs = dict(trainer_kwargs={"data_collator": collator}, per_device_train_batch_size=4, max_steps=4,
                  learning_rate=1e-3)
    hf, ours = both(mlm, data, tmp_path / "ga1", **kwargs)
    assert_same(hf, ours, rtol=1e-5)
    # A stream: Lightning's fetcher reads a loader without a length one batch ahead itself, as accelerate does.
    stream = data.to_iterable_dataset()
    hf, ours = both(mlm, stream, tmp_path / "stream", **kwargs)
    assert_same(hf, ours, rtol=1e-5)
    # Accumulating 2 batches: BERT's forward takes **kwargs, so transformers 5.x logs the window's summed loss
    # without dividing by 2 (docs/parity.md, difference 1); the batches, masks and dropout are the same.
    hf, ours = both(mlm, data, tmp_path / "ga2", gradient_accumulation_steps=2, **kwargs)
    theirs = [r["loss"] / 2 for r in hf.log_history if "loss" in r]
    assert max_rel_diff([r["loss"] for r in ours.log_history if "loss" in r], theirs) < 1e-5


def test_the_cli_trains_with_the_numbers_of_the_transformers_script(tmp_path):
    """configs/quickstart.yaml through the CLI and the transformers script it stands for (the packaged MiniLM and
    movie reviews, the same seed): transformers.Trainer seeds again once the model is built, so the dropout of
    training does not start where building the new classifier head left the generator; the CLI too, and the
    records agree."""
    from pathlib import Path

    from hf_lightning.callbacks.hf_flow import find_flow
    from hf_lightning.cli import main
    from hf_lightning.data.builtin import load_builtin, resolve_model_path

    config = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    cli = main(["fit", "--config", str(config), "--trainer.max_steps", "3",
                "--data.init_args.max_train_samples", "64", "--data.init_args.max_eval_samples", "32",
                "--trainer.callbacks.init_args.logging_steps", "1", "--trainer.callbacks.init_args.eval_steps", "3",
                "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "cli"),
                "--export_dir", "none"])
    door = find_flow(cli.trainer).state.log_history
    transformers.set_seed(42)
    path = resolve_model_path("minilm")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    splits = load_builtin("movie_reviews", 0.1, 0.1)

    def encode(batch):
        return {**tokenizer(batch["text"], truncation=True, max_length=64), "labels": batch["label"]}

    train, held_out = (splits[name].select(range(n)) for name, n in (("train", 64), ("validation", 32)))
    train, held_out = (ds.map(encode, batched=True, remove_columns=ds.column_names) for ds in (train, held_out))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    args = transformers.TrainingArguments(str(tmp_path / "hf"), learning_rate=1e-4, warmup_steps=0.1,
                                          per_device_train_batch_size=32, per_device_eval_batch_size=128, max_steps=3,
                                          logging_steps=1, eval_strategy="steps", eval_steps=3, seed=42, report_to=[],
                                          save_strategy="no", disable_tqdm=True, use_cpu=True)
    script = transformers.Trainer(model=model, args=args, train_dataset=train, eval_dataset=held_out,
                                  data_collator=transformers.DataCollatorWithPadding(tokenizer),
                                  processing_class=tokenizer)
    script.train()
    fields = ("loss", "grad_norm", "learning_rate", "eval_loss")
    expected = [{k: r[k] for k in fields if k in r} for r in script.state.log_history if set(fields) & set(r)]
    got = [{k: r[k] for k in fields if k in r} for r in door if set(fields) & set(r)]
    assert [sorted(r) for r in got] == [sorted(r) for r in expected]
    assert max_rel_diff(got, expected) < 1e-5


def test_label_smoothing_on_a_lora_causal_lm_shifts_the_labels_as_transformers(tmp_path):
    """A PEFT-wrapped causal LM with label smoothing: transformers looks through the adapter wrapper to the base
    model's class and shifts the labels; hf_lightning read the wrapper's class (PeftModelForCausalLM) and smoothed
    unshifted labels, another objective (step-1 loss 5.46 against 4.86)."""
    from peft import LoraConfig, get_peft_model

    def lora_gpt2() -> torch.nn.Module:
        return get_peft_model(_gpt2(), LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["c_attn"],
                                                  fan_in_fan_out=True))

    hf, ours = both(lora_gpt2, _lm_dataset(16, 3), tmp_path, per_device_train_batch_size=4,
                    label_smoothing_factor=0.1, **dict(LM, num_train_epochs=1))
    assert_same(hf, ours, rtol=1e-5)
