"""Task recipes end to end (token classification, causal / masked LM, seq2seq) and their HF-parity checks.

Each recipe test runs the shipped yaml through the CLI entry point with overrides that keep it short (tiny models from
config, few steps, data subsets) and asserts a metric beats the untrained model's, measured in the same test with the
``validate`` subcommand (same seed, so the same initial weights).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import lightning as L
import pytest
import torch
import transformers

from hf_lightning.cli import main
from hf_lightning.data.builtin import load_builtin, resolve_model_path
from hf_lightning.data.loader import WINDOW_KEY
from hf_lightning.data.tasks import LanguageModelingDataModule, Seq2SeqDataModule, TokenClassificationDataModule
from hf_lightning.modules.language_modeling import LanguageModelingModule
from hf_lightning.modules.seq2seq import Seq2SeqModule
from hf_lightning.modules.token_classification import SeqevalMetric, TokenClassificationModule
from hf_lightning.settings import OptimizerSettings
from tests.helpers.tiny import TINY_BERT

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_T5 = {"model_type": "t5", "vocab_size": 30522, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1,
           "num_heads": 4, "decoder_start_token_id": 101, "eos_token_id": 102, "pad_token_id": 0}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/integration/conftest.py


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerBase:
    return transformers.AutoTokenizer.from_pretrained(resolve_model_path("minilm"))


def cli_for(tmp_path: Path, subcommand: str, config: str, *overrides: str):
    """Runs ``python -m hf_lightning <subcommand> --config configs/<config>`` quietly; returns the LightningCLI."""
    return main([
        subcommand, "--config", str(CONFIGS / config), "--trainer.logger", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(tmp_path / subcommand),
        *(["--export_dir", "none"] if subcommand == "fit" else []), *overrides,
    ])


def run_cli(tmp_path: Path, subcommand: str, config: str, *overrides: str) -> dict[str, float]:
    """`cli_for`, returning the evaluation metrics of the run."""
    return dict(cli_for(tmp_path, subcommand, config, *overrides).model.eval_results)


# ----------------------------------------------------------------------------------------------- token classification
def hf_run_ner_align(tokenizer, examples, label_list, label_all_tokens, max_length):
    """``tokenize_and_align_labels`` of transformers' examples/pytorch/token-classification/run_ner.py, verbatim logic."""
    b_to_i_label = []
    for idx, label in enumerate(label_list):
        if label.startswith("B-") and label.replace("B-", "I-") in label_list:
            b_to_i_label.append(label_list.index(label.replace("B-", "I-")))
        else:
            b_to_i_label.append(idx)
    tokenized_inputs = tokenizer(examples["tokens"], padding=False, truncation=True, max_length=max_length,
                                 is_split_into_words=True)
    labels = []
    for i, label in enumerate(examples["ner_tags"]):
        word_ids = tokenized_inputs.word_ids(batch_index=i)
        previous_word_idx = None
        label_ids = []
        for word_idx in word_ids:
            if word_idx is None:
                label_ids.append(-100)
            elif word_idx != previous_word_idx:
                label_ids.append(label[word_idx])
            else:
                label_ids.append(b_to_i_label[label[word_idx]] if label_all_tokens else -100)
            previous_word_idx = word_idx
        labels.append(label_ids)
    tokenized_inputs["labels"] = labels
    return tokenized_inputs


@pytest.mark.parametrize("label_all_tokens", [False, True])
def test_label_alignment_matches_hf_run_ner(tokenizer, label_all_tokens):
    dm = TokenClassificationDataModule(dataset="wnut16", tokenizer="minilm", max_length=32,
                                       label_all_tokens=label_all_tokens, max_train_samples=200)
    dm.setup("fit")
    ours = dm.split("train")
    raw = load_builtin("wnut16")["train"].select(range(200))
    names = raw.features["ner_tags"].feature.names
    theirs = hf_run_ner_align(tokenizer, raw[:], names, label_all_tokens, 32)
    assert dm.id2label == dict(enumerate(names)) and dm.num_labels == 21
    assert ours["input_ids"] == theirs["input_ids"]
    assert ours["labels"] == theirs["labels"]
    continuation = sum(l != -100 for row in ours["labels"] for l in row) > sum(len(t) for t in raw["ner_tags"])
    assert continuation == label_all_tokens  # more labelled positions than words only when labelling every piece
    batch = dm.collate_fn([ours[i] for i in range(4)])
    assert batch["labels"].shape == batch["input_ids"].shape and (batch["labels"] == -100).any()


def test_seqeval_metric_matches_hf_compute_metrics():
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    names = ["O", "B-per", "I-per", "B-loc", "I-loc"]
    labels = torch.tensor([[-100, 1, 2, 0, 3, -100, -100], [-100, 0, 3, 4, 1, -100, -100]])
    preds = torch.tensor([[0, 1, 2, 0, 0, 4, 0], [0, 0, 3, 4, 3, 0, 0]])
    metric = SeqevalMetric(dict(enumerate(names)))
    metric.update(torch.nn.functional.one_hot(preds, 5).float(), labels)  # logits -> argmax inside
    got = metric.compute()
    # HF run_ner's compute_metrics: drop -100 positions, map ids to names, score with seqeval.
    true_p = [[names[p] for p, l in zip(pr, la) if l != -100] for pr, la in zip(preds.tolist(), labels.tolist())]
    true_l = [[names[l] for p, l in zip(pr, la) if l != -100] for pr, la in zip(preds.tolist(), labels.tolist())]
    assert got == pytest.approx({"precision": precision_score(true_l, true_p), "recall": recall_score(true_l, true_p),
                                 "f1": f1_score(true_l, true_p), "accuracy": accuracy_score(true_l, true_p)})
    assert 0 < got["f1"] < 1


def synthetic_ner(n: int, seed: int) -> datasets.Dataset:
    """Sentences with person names and (one- or two-word) places among filler words; string BIO tags."""
    gen = torch.Generator().manual_seed(seed)
    people, places = ["alice", "bob", "carol", "dave"], [["paris"], ["london"], ["new", "york"], ["rome"]]
    filler = ["we", "met", "in", "today", "and", "went", "to", "see", "the", "city", "with"]
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(int(torch.randint(4, 9, (1,), generator=gen))):
            kind = int(torch.randint(0, 4, (1,), generator=gen))
            if kind == 0:
                tokens.append(people[int(torch.randint(0, 4, (1,), generator=gen))])
                tags.append("B-person")
            elif kind == 1:
                place = places[int(torch.randint(0, 4, (1,), generator=gen))]
                tokens += place
                tags += ["B-place"] + ["I-place"] * (len(place) - 1)
            else:
                tokens.append(filler[int(torch.randint(0, len(filler), (1,), generator=gen))])
                tags.append("O")
        rows.append({"tokens": tokens, "ner_tags": tags})
    return datasets.Dataset.from_list(rows)


def test_token_classification_learns_entities(tmp_path):
    """String tags -> ids, tiny BERT, Lightning Trainer: entity F1 far above the untrained model's."""
    L.seed_everything(0)
    dm = TokenClassificationDataModule(dataset=datasets.DatasetDict(train=synthetic_ner(256, 0),
                                                                    validation=synthetic_ner(64, 1)),
                                       tokenizer="minilm", batch_size=16, eval_batch_size=64)
    assert dm.id2label == {0: "B-person", 1: "B-place", 2: "I-place", 3: "O"}  # sorted, as run_ner
    module = TokenClassificationModule(model=TINY_BERT, tokenizer="minilm", num_labels=dm.num_labels,
                                       id2label=dm.id2label, optimization=OptimizerSettings(learning_rate=5e-3),
                                       entity_level_metrics=True)
    trainer = L.Trainer(max_steps=48, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
                        default_root_dir=tmp_path)
    trainer.validate(module, datamodule=dm, verbose=False)
    before = dict(module.eval_results)
    trainer.fit(module, datamodule=dm)
    after = module.eval_results
    assert {"eval_precision", "eval_recall", "eval_f1", "eval_accuracy", "eval_person_f1"} <= set(after)
    assert after["eval_f1"] > before["eval_f1"] + 0.5 and after["eval_f1"] > 0.8
    assert after["eval_accuracy"] > before["eval_accuracy"]


@pytest.mark.slow  # a shipped recipe through the CLI: validate, then fit
def test_ner_recipe_runs_through_cli(tmp_path):
    short = ["--model.init_args.model", json.dumps(TINY_BERT), "--model.init_args.tokenizer", "minilm",
             "--model.init_args.optimization.learning_rate", "3e-3", "--data.init_args.max_train_samples", "320",
             "--data.init_args.max_eval_samples", "64", "--data.init_args.max_length", "48"]
    before = run_cli(tmp_path, "validate", "ner_wnut16.yaml", *short)
    after = run_cli(tmp_path, "fit", "ner_wnut16.yaml", *short, "--trainer.max_steps", "20",
                    "--trainer.max_epochs", "-1")
    assert {"eval_precision", "eval_recall", "eval_f1", "eval_accuracy"} <= set(after)
    assert after["eval_loss"] < 0.5 * before["eval_loss"]
    assert after["eval_accuracy"] > before["eval_accuracy"]


def test_token_classification_errors_name_the_fix():
    with pytest.raises(ValueError, match="set model.id2label"):
        TokenClassificationModule(model=TINY_BERT, tokenizer="minilm", num_labels=3)  # LABEL_0.. are not tag names
    dm = TokenClassificationDataModule(dataset=datasets.DatasetDict(train=synthetic_ner(8, 0)), tokenizer="minilm",
                                       text_column="words", validation_size=0, test_size=0)
    with pytest.raises(ValueError, match=r"data.text_column='words' is not a column.*tokens"):
        dm.setup("fit")


# ----------------------------------------------------------------------------------------------- language modelling
def _attach(dm: L.LightningDataModule, module: L.LightningModule, accumulate: int) -> None:
    trainer = L.Trainer(accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, use_distributed_sampler=False)
    trainer.strategy.connect(module)
    dm.trainer = trainer


TINY_LLAMA = {"model_type": "llama", "vocab_size": 30522, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2}
TINY_GPT2 = {"model_type": "gpt2", "vocab_size": 30522, "n_embd": 32, "n_layer": 1, "n_head": 2,
             "bos_token_id": 101, "eos_token_id": 102}


@pytest.mark.parametrize("model,task,hf_shifts", [(TINY_LLAMA, "causal-lm", True), (TINY_GPT2, "causal-lm", False),
                                                  (TINY_BERT, "masked-lm", False)])
def test_lm_blocks_and_item_count_match_hf(tmp_path, tokenizer, model, task, hf_shifts):
    """Blocks as run_clm's group_texts; num_items_in_batch counts the tokens the loss predicts: transformers.Trainer's
    count for ForCausalLM-loss models such as Llama and for MLM; for GPT-2 (no loss_type, loss still shifted) one token
    per sequence fewer than transformers, which counts its labels unshifted."""
    mlm = task == "masked-lm"
    dm = LanguageModelingDataModule(dataset="sms_spam", mlm=mlm, block_size=32, batch_size=4, max_train_samples=60)
    module = LanguageModelingModule(model=model, tokenizer="minilm", task=task)
    shifted = task == "causal-lm"
    assert module.loss_shifts_labels == shifted
    _attach(dm, module, accumulate=2)
    train = dm.split("train")
    texts = list(load_builtin("sms_spam")["train"].select(range(60))["text"])
    stream = [t for ids in tokenizer(texts)["input_ids"] for t in ids]
    assert train["input_ids"] == [stream[i : i + 32] for i in range(0, len(stream) // 32 * 32, 32)]
    torch.manual_seed(0)
    batches = list(dm.train_dataloader())[:2]  # one accumulation window
    window = batches[0][WINDOW_KEY]
    assert window.size == 2 and batches[1][WINDOW_KEY].num_items == window.num_items
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    hf = transformers.Trainer(model=module.model, args=args)
    samples = [{k: v for k, v in b.items() if k != WINDOW_KEY} for b in batches]
    hf_count = int(hf._get_num_items_in_batch(samples, torch.device("cpu")))
    sequences = 2 * 4
    assert window.num_items == hf_count - (sequences if shifted and not hf_shifts else 0)
    if not mlm:
        assert window.num_items == sequences * 31  # full blocks of 32, no padding: 31 predicted tokens each
    else:
        assert 0 < window.num_items < 0.3 * 2 * 4 * 32  # ~15% of the tokens are masked


@pytest.mark.slow  # a shipped recipe through the CLI: validate, then fit
def test_causal_lm_recipe_learns(tmp_path):
    short = ["--data.init_args.max_train_samples", "800", "--data.init_args.max_eval_samples", "200",
             "--data.init_args.block_size", "32"]
    before = run_cli(tmp_path, "validate", "causal_lm_tiny.yaml", *short)
    after = run_cli(tmp_path, "fit", "causal_lm_tiny.yaml", *short, "--trainer.max_steps", "30",
                    "--trainer.val_check_interval", "30")
    assert after["eval_perplexity"] == pytest.approx(math.exp(after["eval_loss"]))
    assert after["eval_perplexity"] < 0.2 * before["eval_perplexity"]


@pytest.mark.slow  # a shipped recipe through the CLI: validate, then fit
def test_mlm_recipe_learns(tmp_path):
    short = ["--model.init_args.model", json.dumps(TINY_BERT), "--model.init_args.tokenizer", "minilm",
             "--model.init_args.optimization.learning_rate", "1e-2", "--data.init_args.max_train_samples", "800",
             "--data.init_args.max_eval_samples", "200", "--data.init_args.block_size", "32"]
    before = run_cli(tmp_path, "validate", "mlm_movie_reviews.yaml", *short)
    after = run_cli(tmp_path, "fit", "mlm_movie_reviews.yaml", *short, "--trainer.max_steps", "30",
                    "--trainer.val_check_interval", "30")
    assert after["eval_perplexity"] < 0.2 * before["eval_perplexity"]


def test_lm_task_must_match_data():
    dm = LanguageModelingDataModule(dataset="sms_spam", mlm=True, max_train_samples=8)
    module = LanguageModelingModule(model=TINY_BERT, tokenizer="minilm", task="causal-lm")
    with pytest.raises(ValueError, match="data.mlm=True does not match model.task='causal-lm'"):
        L.Trainer(max_steps=1, logger=False, enable_progress_bar=False).fit(module, datamodule=dm)


# ----------------------------------------------------------------------------------------------- seq2seq
def test_seq2seq_prediction_step_matches_seq2seq_trainer(tmp_path):
    torch.manual_seed(0)
    module = Seq2SeqModule(model=TINY_T5, tokenizer="minilm", predict_with_generate=True, generation_max_length=12,
                           generation_num_beams=2, generation_config={"no_repeat_ngram_size": 2})
    assert module.model.generation_config.no_repeat_ngram_size == 2
    assert module.model.generation_config.decoder_start_token_id == 101
    dm = Seq2SeqDataModule(dataset="aclsum", max_source_length=48, max_target_length=16, max_train_samples=4)
    _attach(dm, module, accumulate=1)
    batch = next(iter(dm.train_dataloader()))
    batch.pop(WINDOW_KEY)
    assert torch.equal(batch["decoder_input_ids"][:, 0], torch.full((4,), 101))  # built from labels by the collator
    module.model.eval()
    ours = module.prediction_step(module.model, dict(batch), prediction_loss_only=False)
    args = transformers.Seq2SeqTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True,
                                                 predict_with_generate=True)
    hf = transformers.Seq2SeqTrainer(model=module.model, args=args, processing_class=module.tokenizer)
    hf._gen_kwargs = {"max_length": 12, "num_beams": 2}  # what Seq2SeqTrainer.evaluate sets from the two arguments
    theirs = hf.prediction_step(module.model, dict(batch), prediction_loss_only=False)
    assert torch.allclose(ours[0], theirs[0])
    assert torch.equal(ours[1], theirs[1]) and torch.equal(ours[2], theirs[2])


@pytest.mark.slow  # a shipped recipe through the CLI: validate, then fit
def test_bert2bert_recipe_warm_starts_an_encoder_decoder_that_learns_and_exports(tmp_path):
    """configs/summarization_bert2bert.yaml with tiny BERT sides from config: an EncoderDecoderModel whose config and
    generation_config carry the [CLS] / [SEP] / [PAD] ids, trained through the CLI (loss drops, generation is scored)
    and exported in a folder EncoderDecoderModel.from_pretrained loads."""
    spec = {"encoder": TINY_BERT, "decoder": TINY_BERT, "decoder_start_token_id": 101, "eos_token_id": 102,
            "pad_token_id": 0}
    short = ["--model.init_args.model", json.dumps(spec), "--model.init_args.optimization.learning_rate", "3e-3",
             "--model.init_args.generation_max_length", "16", "--data.init_args.max_source_length", "64",
             "--data.init_args.max_target_length", "16", "--data.init_args.max_eval_samples", "10",
             "--data.init_args.batch_size", "10"]
    before = run_cli(tmp_path, "validate", "summarization_bert2bert.yaml", *short)
    cli = cli_for(tmp_path, "fit", "summarization_bert2bert.yaml", *short, "--trainer.max_epochs", "4",
                  "--trainer.check_val_every_n_epoch", "4", "--export_dir", str(tmp_path / "export"))
    model = cli.model.model
    assert isinstance(model, transformers.EncoderDecoderModel) and model.decoder.config.add_cross_attention
    assert (model.config.decoder_start_token_id, model.config.pad_token_id) == (101, 0)
    after = cli.model.eval_results
    assert {"eval_rouge1", "eval_gen_len"} <= set(after)
    assert after["eval_loss"] < before["eval_loss"] - 1.0
    reloaded = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "export")
    torch.testing.assert_close(reloaded.decoder.cls.predictions.bias, model.decoder.cls.predictions.bias)
    assert reloaded.generation_config.decoder_start_token_id == 101


@pytest.mark.slow  # a shipped recipe through the CLI: validate, then fit
def test_summarization_recipe_learns(tmp_path):
    short = ["--model.init_args.model", json.dumps(TINY_T5 | {"d_model": 64, "d_kv": 16, "d_ff": 128}),
             "--model.init_args.optimization.learning_rate", "3e-2", "--model.init_args.generation_max_length", "24",
             "--data.init_args.max_source_length", "96", "--data.init_args.max_target_length", "24",
             "--data.init_args.max_eval_samples", "25", "--data.init_args.batch_size", "10"]
    before = run_cli(tmp_path, "validate", "summarization_aclsum.yaml", *short)
    after = run_cli(tmp_path, "fit", "summarization_aclsum.yaml", *short, "--trainer.max_epochs", "6",
                    "--trainer.check_val_every_n_epoch", "6")
    assert {"eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_gen_len"} <= set(after)
    assert after["eval_loss"] < before["eval_loss"] - 2.0
    assert after["eval_rouge1"] > before["eval_rouge1"] + 5  # the untrained model's is ~0
