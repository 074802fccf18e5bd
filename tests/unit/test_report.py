"""Tests for hf_lightning.report: a real transformers.Trainer run, real TensorBoard event files, the CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hf_lightning.report import main, write_report


class _Regression(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 1, generator=gen)
        self.y = 2 * self.x + 3 + 0.1 * torch.randn(n, 1, generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_x": self.x[i], "labels": self.y[i]}


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 1)

    def forward(self, input_x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.lin(input_x)
        return {"loss": nn.functional.mse_loss(logits, labels), "logits": logits}


def _mae(pred) -> dict[str, float]:
    return {"mae": float(abs(pred.predictions - pred.label_ids).mean())}


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real transformers.Trainer run: 8 steps, eval every 2, checkpoints at 4 and 8, then save_state()."""
    from transformers import Trainer, TrainingArguments

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("hf_run")
    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=str(out),
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        save_steps=4,
        report_to=[],
        use_cpu=True,
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=0.1,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=_Linear(),
        args=args,
        train_dataset=_Regression(32, 0),
        eval_dataset=_Regression(16, 1),
        compute_metrics=_mae,
    )
    trainer.train()
    trainer.save_state()
    return out


def _history(path: Path) -> list[dict]:
    return json.loads(path.read_text())["log_history"]


def _assert_real_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(str(path))
    assert img.ndim == 3 and img.shape[0] >= 200 and img.shape[1] >= 300
    ink = (img[..., :3] < 0.85).any(axis=-1).mean()  # share of non-white pixels: axes, lines, text
    assert ink > 0.01, f"image looks blank (ink share {ink:.4f})"


def test_report_from_real_trainer_state(hf_run: Path) -> None:
    history = _history(hf_run / "trainer_state.json")
    result = write_report(hf_run)

    assert result.png_path == hf_run / "report.png"
    _assert_real_png(result.png_path)
    assert result.panels == ["Training loss", "Learning rate", "Grad norm", "Eval loss", "Eval mae"]

    train = [r for r in history if "loss" in r]
    evals = [r for r in history if "eval_loss" in r]
    final = next(r for r in history if "train_runtime" in r)
    summary = result.summary
    assert summary["source"] == str(hf_run / "trainer_state.json")
    assert summary["steps"] == 8 == max(r["step"] for r in history)
    assert summary["epochs"] == pytest.approx(final["epoch"])
    assert summary["train_loss_final"] == pytest.approx(train[-1]["loss"])
    best_train = min(train, key=lambda r: r["loss"])
    assert summary["train_loss_best"] == pytest.approx(best_train["loss"])
    assert summary["train_loss_best_step"] == best_train["step"]
    assert summary["train_loss_mean"] == pytest.approx(final["train_loss"])
    assert summary["runtime_s"] == pytest.approx(final["train_runtime"])
    for metric in ("eval_loss", "eval_mae"):  # both lower-is-better
        best = min(evals, key=lambda r: r[metric])
        assert summary["best_eval"][metric] == {
            "value": pytest.approx(best[metric]),
            "step": best["step"],
            "goal": "min",
        }
    assert set(summary["best_eval"]) == {"eval_loss", "eval_mae"}
    # speed metrics are summarised, not plotted
    runtimes = [r["eval_runtime"] for r in evals]
    assert summary["eval_speed"]["eval_runtime"] == pytest.approx(sum(runtimes) / len(runtimes))
    assert not any("runtime" in title or "per_second" in title for title in result.panels)


def test_falls_back_to_newest_checkpoint_by_step_number(hf_run: Path, tmp_path: Path) -> None:
    # checkpoint-9 sorts after checkpoint-10 as a string; the step number must win.
    shutil.copytree(hf_run / "checkpoint-4", tmp_path / "checkpoint-9")
    shutil.copytree(hf_run / "checkpoint-8", tmp_path / "checkpoint-10")
    out = tmp_path / "pictures" / "curves.png"
    result = write_report(tmp_path, out)

    assert result.png_path == out
    _assert_real_png(out)
    assert result.summary["source"] == str(tmp_path / "checkpoint-10" / "trainer_state.json")
    history = _history(hf_run / "checkpoint-8" / "trainer_state.json")
    assert result.summary["steps"] == 8
    assert result.summary["train_loss_final"] == pytest.approx([r for r in history if "loss" in r][-1]["loss"])
    assert result.summary["runtime_s"] is None  # checkpoints are saved before the final train_runtime record


def _write_events(log_dir: Path, series: dict[str, list[tuple[int, float]]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    for tag, points in series.items():
        for step, value in points:
            writer.add_scalar(tag, value, step)
    writer.close()


def test_report_from_hf_tensorboard_tags(tmp_path: Path) -> None:
    loss = [(s, 3.0 / s + (0.5 if s == 6 else 0.0)) for s in range(1, 11)]
    accuracy = [(2, 0.4), (4, 0.7), (6, 0.9), (8, 0.8), (10, 0.9)]
    _write_events(
        tmp_path / "runs" / "May01_host",
        {
            "train/loss": loss,
            "train/learning_rate": [(s, 0.1 * (1 - s / 10)) for s in range(1, 11)],
            "train/grad_norm": [(s, 1.0 + s) for s in range(1, 11)],
            "train/epoch": [(s, s / 5) for s in range(1, 11)],
            "eval/loss": [(2, 1.5), (4, 0.9), (6, 1.1), (8, 0.9), (10, 1.0)],
            "eval/accuracy": accuracy,
            "eval/runtime": [(2, 0.5), (4, 0.7)],
            "train/train_runtime": [(10, 12.5)],
        },
    )
    result = write_report(tmp_path)

    _assert_real_png(result.png_path)
    assert result.panels == ["Training loss", "Learning rate", "Grad norm", "Eval loss", "Eval accuracy"]
    summary = result.summary
    assert summary["source"] == str(tmp_path / "runs" / "May01_host")
    assert summary["steps"] == 10
    assert summary["epochs"] == pytest.approx(2.0)
    assert summary["train_loss_final"] == pytest.approx(loss[-1][1])
    assert summary["train_loss_best"] == pytest.approx(min(v for _, v in loss))
    # first best wins on ties (eval loss 0.9 at steps 4 and 8; accuracy 0.9 at steps 6 and 10)
    assert summary["best_eval"]["eval_loss"] == {"value": pytest.approx(0.9), "step": 4, "goal": "min"}
    assert summary["best_eval"]["eval_accuracy"] == {"value": pytest.approx(0.9), "step": 6, "goal": "max"}
    assert summary["eval_speed"]["eval_runtime"] == pytest.approx(0.6)
    assert (summary["runtime_s"], summary["runtime_source"]) == (pytest.approx(12.5), "train_runtime")


def test_report_from_lightning_tags_reads_newest_run_only(tmp_path: Path) -> None:
    old = tmp_path / "lightning_logs" / "version_0"
    new = tmp_path / "lightning_logs" / "version_1"
    _write_events(old, {"train_loss": [(1, 100.0)], "val_acc": [(1, 0.99)], "val_f1": [(1, 0.5)]})
    _write_events(
        new,
        {
            "train_loss": [(s, 2.0 - 0.1 * s) for s in range(1, 9)],
            "lr-AdamW": [(s, 1e-3) for s in range(1, 9)],
            "val_loss": [(4, 1.2), (8, 1.0)],
            "val_acc": [(4, 0.6), (8, 0.55)],
            "epoch": [(s, float((s - 1) // 4)) for s in range(1, 9)],
        },
    )
    for event_file in old.iterdir():  # make version_0 unambiguously older
        os.utime(event_file, (1_000_000, 1_000_000))
    result = write_report(tmp_path)

    assert result.panels == ["Training loss", "Learning rate", "Eval loss", "Eval acc"]  # no grad norm logged
    summary = result.summary
    assert summary["source"] == str(new)
    assert summary["steps"] == 8
    assert summary["epochs"] == 2  # lightning logs the 0-based epoch index
    assert summary["train_loss_final"] == pytest.approx(1.2)
    assert summary["best_eval"]["eval_acc"] == {"value": pytest.approx(0.6), "step": 4, "goal": "max"}
    assert "eval_f1" not in summary["best_eval"]
    assert summary["runtime_source"] == "event timestamps" and summary["runtime_s"] >= 0


def test_no_data_raises_clear_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(FileNotFoundError, match="trainer_state.json.*checkpoint-\\*.*events.out.tfevents"):
        write_report(tmp_path)
    assert not (tmp_path / "report.png").exists()
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        write_report(tmp_path / "missing")


def test_unknown_tags_only_and_bad_out(tmp_path: Path) -> None:
    _write_events(tmp_path / "tb", {"my/custom": [(1, 1.0)]})
    with pytest.raises(FileNotFoundError, match="no known tags"):
        write_report(tmp_path)
    with pytest.raises(ValueError, match=r"out=.*\.png"):
        write_report(tmp_path, tmp_path / "report.jpg")


def test_main_prints_summary(hf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.png"
    assert main([str(hf_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    evals = [r for r in _history(hf_run / "trainer_state.json") if "eval_loss" in r]
    best = min(evals, key=lambda r: r["eval_loss"])
    assert f"{best['eval_loss']:.6g} at step {best['step']}" in printed
    assert "best eval_loss (min)" in printed and "steps" in printed and str(out) in printed
    _assert_real_png(out)

    assert main([str(hf_run), "--out", str(out), "--no-summary"]) == 0
    printed = capsys.readouterr().out
    assert "best eval_loss" not in printed and "report written to" in printed


def test_main_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "error:" in captured.err and "trainer_state.json" in captured.err
    assert captured.out == ""
