"""Users' own data files through the CLI: label names, unseen labels, multi-label columns (names, ids, multi-hot)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import transformers

from hf_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "tests/assets/tiny_cli.yaml")
WORDS = ["film", "plot", "acting", "story", "music", "scene", "cast"]


def write_rows(path: Path, rows: list[dict]) -> str:
    if path.suffix == ".csv":
        keys = list(rows[0])
        lines = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def fit(tmp_path: Path, files: dict[str, str], *extra: str):
    return main(["fit", "--config", TINY, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
                 "--data.init_args.data_files", json.dumps(files), "--export_dir", str(tmp_path / "export"), *extra])


def sentiment_rows(n: int, names: tuple[str, str] = ("neg", "pos")) -> list[dict]:
    return [{"text": f"the {WORDS[i % len(WORDS)]} was {'great' if i % 2 else 'awful'}", "label": names[i % 2]}
            for i in range(n)]


def test_string_labels_become_named_classes_in_the_exported_model(tmp_path):
    files = {"train": write_rows(tmp_path / "train.csv", sentiment_rows(48)),
             "validation": write_rows(tmp_path / "validation.csv", sentiment_rows(16))}
    cli = fit(tmp_path, files)
    assert cli.model.model.config.id2label == {0: "neg", 1: "pos"}  # sorted names, as transformers' example
    assert cli.model.model.config.label2id == {"neg": 0, "pos": 1}
    classify = transformers.pipeline("text-classification", model=str(tmp_path / "export"))
    assert classify("the plot was great")[0]["label"] in {"neg", "pos"}


def test_a_label_only_the_validation_split_has_is_named_before_training(tmp_path):
    files = {"train": write_rows(tmp_path / "train.csv", sentiment_rows(16)),
             "validation": write_rows(tmp_path / "validation.csv", sentiment_rows(8, ("neg", "mixed")))}
    with pytest.raises(ValueError, match=r"validation split has label values \['mixed'\].*train split"):
        fit(tmp_path, files)
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("form", ["names", "ids", "multi_hot"])
def test_multi_label_columns_train_a_multi_label_model(tmp_path, form):
    """A label column of lists: BCE with logits (problem_type multi_label_classification), multi-label metrics."""
    tags = ["acting", "music", "plot"]
    rows = []
    for i in range(48):
        present = [t for j, t in enumerate(tags) if (i >> j) & 1] or ["plot"]
        value = {"names": present, "ids": [tags.index(t) for t in present],
                 "multi_hot": [int(t in present) for t in tags]}[form]
        rows.append({"text": "the " + " and the ".join(present) + " were noted", "tags": value})
    files = {"train": write_rows(tmp_path / "train.jsonl", rows[:40]),
             "validation": write_rows(tmp_path / "validation.jsonl", rows[40:])}
    cli = fit(tmp_path, files, "--data.init_args.label_column", "tags", "--model.init_args.metrics",
              "[accuracy, f1, exact_match]")
    config = cli.model.model.config
    assert config.problem_type == "multi_label_classification" and config.num_labels == 3
    if form == "names":
        assert config.id2label == {0: "acting", 1: "music", 2: "plot"}
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    results = cli.model.eval_results
    assert {"eval_loss", "eval_accuracy", "eval_f1", "eval_exact_match"} <= set(results)
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    exported = transformers.AutoConfig.from_pretrained(tmp_path / "export")
    assert exported.problem_type == "multi_label_classification"


def test_regression_recipe_predicts_the_score(tmp_path):
    """configs/regression_movie_reviews.yaml, shrunk to a 2-layer BERT and seconds: a one-output head (linked from
    the float score column), MSE loss, torchmetrics' regression metrics; it beats the untrained model's error."""
    from tests.integration.test_tasks import cli_for

    tiny = json.dumps({"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128})
    shrink = ["--model.init_args.model", tiny, "--model.init_args.tokenizer", "minilm",
              "--model.init_args.optimization.learning_rate", "3e-3", "--data.init_args.max_train_samples", "512",
              "--data.init_args.max_eval_samples", "128", "--trainer.max_steps", "48"]
    before = dict(cli_for(tmp_path, "validate", "regression_movie_reviews.yaml", *shrink).model.eval_results)
    cli = cli_for(tmp_path, "fit", "regression_movie_reviews.yaml", *shrink)
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    after = cli.model.eval_results
    assert cli.model.model.config.num_labels == 1
    assert {"eval_mse", "eval_mae", "eval_pearson", "eval_spearman"} <= set(after)
    assert after["eval_mse"] < before["eval_mse"] and after["eval_loss"] == pytest.approx(after["eval_mse"], rel=1e-4)


def test_a_folder_written_by_save_to_disk_is_a_dataset(tmp_path):
    import datasets

    rows = sentiment_rows(40)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:32]),
                          "validation": datasets.Dataset.from_list(rows[32:])}).save_to_disk(str(tmp_path / "saved"))
    cli = main(["fit", "--config", TINY, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
                "--data.init_args.dataset", str(tmp_path / "saved"), "--export_dir", "none"])
    assert len(cli.datamodule.split("train")) == 32 and len(cli.datamodule.split("validation")) == 8
    assert cli.model.model.config.id2label == {0: "neg", 1: "pos"}


def test_streaming_files_train_without_loading_them(tmp_path):
    """``streaming: true``: the files are read as a stream (tokenised as read, in file order); max_steps bounds the
    run; evaluation streams too."""
    import datasets

    rows = [{"text": f"the {WORDS[i % len(WORDS)]} was {'great' if i % 2 else 'awful'}", "label": i % 2}
            for i in range(64)]
    files = {"train": write_rows(tmp_path / "train.jsonl", rows[:48]),
             "validation": write_rows(tmp_path / "validation.jsonl", rows[48:])}
    cli = fit(tmp_path, files, "--data.init_args.streaming", "true", "--data.init_args.num_labels", "2",
              "--trainer.max_steps", "5")
    assert isinstance(cli.datamodule.split("train"), datasets.IterableDataset)
    assert cli.trainer.global_step == 5
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    assert {"eval_loss", "eval_accuracy"} <= set(cli.model.eval_results)
    assert cli.model.model.config.num_labels == 2


def test_a_stream_resumes_at_its_position(tmp_path):
    """``streaming: true`` with checkpoints: resuming from checkpoint-3 skips the batches of the stream already
    trained (transformers' rule for an iterable data set: one endless epoch, the seen batches skipped) and ends with
    the weights of the uninterrupted run."""
    from safetensors.torch import load_file

    rows = [{"text": f"the {WORDS[i % len(WORDS)]} was {'great' if i % 2 else 'awful'} {i}", "label": i % 2}
            for i in range(80)]
    files = {"train": write_rows(tmp_path / "train.jsonl", rows[:64]),
             "validation": write_rows(tmp_path / "validation.jsonl", rows[64:])}
    stream = ("--data.init_args.streaming", "true", "--data.init_args.num_labels", "2", "--trainer.max_steps", "6",
              "--trainer.enable_checkpointing", "true", "--trainer.callbacks+=hf_lightning.callbacks.HFCheckpoint",
              "--trainer.callbacks.save_steps=3")
    full = fit(tmp_path / "full", files, *stream, "--trainer.callbacks.output_dir", str(tmp_path / "full" / "ckpt"))
    assert full.trainer.global_step == 6
    resumed = fit(tmp_path / "resumed", files, *stream, "--trainer.callbacks.output_dir", str(tmp_path / "resumed"),
                  "--trainer.callbacks.resume_from_checkpoint", str(tmp_path / "full" / "ckpt" / "checkpoint-3"))
    assert resumed.trainer.global_step == 6
    want, got = load_file(tmp_path / "full" / "export" / "model.safetensors"), \
        load_file(tmp_path / "resumed" / "export" / "model.safetensors")
    assert max(float((want[k] - got[k]).abs().max()) for k in want) < 1e-6
