"""A picture of a run: ``python -m hf_lightning report OUTPUT_DIR``.

One PNG with a panel per curve (training loss, learning rate, grad norm, eval loss and every other ``eval_*``
metric, against the global step) and a short summary. Sources, in order: ``trainer_state.json`` in the run folder
or its newest ``checkpoint-*`` folder; else TensorBoard event files below it (HF tags such as ``train/loss`` and
``eval/accuracy``, or Lightning-style tags such as ``train_loss``, ``val_loss``, ``lr-AdamW``). Reading them is
`hf_lightning.report_data` (``load_run``); this module summarises the run, draws it and is the command.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_lightning.report_data import (
    EVAL_PREFIXES,
    SPEED_SUFFIXES,
    TB_ALIASES,
    Curve,
    RunData,
    _kind,
    find_event_dir,
    find_trainer_state,
    load_event_dir,
    load_run,
    load_trainer_state,
)
from hf_lightning.settings import LOWER_IS_BETTER

# "Best" of a curve: lower for names ending in one of LOWER_IS_BETTER (the list behind the warning that an error
# metric left to transformers' direction is maximised, hf_lightning/settings.py), higher otherwise. The best
# checkpoint shown is the run's own (trainer_state.json), chosen by its greater_is_better.


@dataclass
class ReportResult:
    """What `write_report` produced.

    Attributes:
        png_path: Where the PNG was written.
        panels: Panel titles, in drawing order (left to right, top to bottom).
        summary: The run summary (see `summarise`); printed by `format_summary`.
    """

    png_path: Path
    panels: list[str]
    summary: dict[str, Any]


def _lower_is_better(name: str) -> bool:
    return name.endswith(LOWER_IS_BETTER)


def _best(name: str, points: Curve) -> tuple[int, float] | None:
    """First best (step, value) of a curve; strict improvement, as transformers tracks its best metric."""
    finite = [p for p in points if math.isfinite(p[1])]
    if not finite:
        return None
    pick = min if _lower_is_better(name) else max
    return pick(finite, key=lambda p: p[1])


def summarise(data: RunData) -> dict[str, Any]:
    """The run in a few numbers: steps, epochs, train loss, best eval metrics, best checkpoint, runtime.

    Args:
        data: The run as read by `load_run`.

    Returns:
        A dict with ``source, steps, epochs, train_loss_final, train_loss_best, train_loss_best_step,
        train_loss_mean, best_eval ({metric: {"value", "step", "goal"}}), best_checkpoint, best_metric,
        best_step, runtime_s, runtime_source, eval_speed ({metric: mean})``; unknown values are None.
    """
    facts = data.facts
    loss = [p for p in data.curves.get("loss", []) if math.isfinite(p[1])]
    best_loss = _best("loss", loss)
    best_eval = {}
    for name, points in data.curves.items():
        best = _best(name, points) if _kind(name) == "eval" else None
        if best is not None:
            goal = "min" if _lower_is_better(name) else "max"
            best_eval[name] = {"value": best[1], "step": best[0], "goal": goal}
    speed = {n: sum(v for _, v in p) / len(p) for n, p in data.curves.items() if _kind(n) == "speed" and p}
    return {
        "source": data.source,
        "steps": facts.get("global_step"),
        "epochs": facts.get("epochs"),
        "train_loss_final": loss[-1][1] if loss else None,
        "train_loss_best": best_loss[1] if best_loss else None,
        "train_loss_best_step": best_loss[0] if best_loss else None,
        "train_loss_mean": facts.get("train_loss"),
        "best_eval": best_eval,
        "best_checkpoint": facts.get("best_checkpoint"),
        "best_metric": facts.get("best_metric"),
        "best_step": facts.get("best_step"),
        "runtime_s": facts.get("runtime_s"),
        "runtime_source": facts.get("runtime_source"),
        "eval_speed": speed,
    }


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def format_summary(summary: dict[str, Any]) -> str:
    """Render a `summarise` dict as an aligned two-column table."""
    rows = [("source", summary["source"]), ("steps", _num(summary["steps"])), ("epochs", _num(summary["epochs"]))]
    rows.append(("train loss (final)", _num(summary["train_loss_final"])))
    if summary["train_loss_best"] is not None:
        rows.append(
            ("train loss (best)", f"{_num(summary['train_loss_best'])} at step {summary['train_loss_best_step']}")
        )
    if summary["train_loss_mean"] is not None:
        rows.append(("train loss (run mean)", _num(summary["train_loss_mean"])))
    for name, best in summary["best_eval"].items():
        rows.append((f"best {name} ({best['goal']})", f"{_num(best['value'])} at step {best['step']}"))
    if summary["best_checkpoint"]:
        detail = (
            f" (metric {_num(summary['best_metric'])} at step {summary['best_step']})" if summary["best_step"] else ""
        )
        rows.append(("best checkpoint", str(summary["best_checkpoint"]) + detail))
    for name, mean in summary["eval_speed"].items():
        rows.append((f"{name} (mean)", _num(mean)))
    if summary["runtime_s"] is not None:
        rows.append(("runtime", f"{summary['runtime_s']:.2f} s (from {summary['runtime_source']})"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _panels(data: RunData) -> list[tuple[str, list[tuple[str, str]]]]:
    """Panel title -> [(curve name, legend label)], in drawing order; panels without data are left out."""
    curves = {n: p for n, p in data.curves.items() if p}
    lrs = [n for n in curves if _kind(n) == "learning_rate"]
    evals = sorted((n for n in curves if _kind(n) == "eval"), key=lambda n: n != "eval_loss")  # stable: loss first
    panels = [
        ("Training loss", [("loss", "train loss")] if "loss" in curves else []),
        ("Learning rate", [(n, n.partition(":")[2] or "learning rate") for n in lrs]),
        ("Grad norm", [("grad_norm", "grad norm")] if "grad_norm" in curves else []),
    ]
    for name in evals:
        lines = [(name, name)] + ([("loss", "train loss")] if name == "eval_loss" and "loss" in curves else [])
        panels.append(("Eval " + name.removeprefix("eval_"), lines))
    return [(title, lines) for title, lines in panels if lines]


def plot_run(data: RunData, summary: dict[str, Any], out: Path) -> list[str]:
    """Draw one panel per curve family against the global step and save a PNG; returns the panel titles."""
    # Figure + FigureCanvasAgg (matplotlib's Agg backend) rather than pyplot: no global state, no GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = _panels(data)
    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(6.0 * ncols, 3.4 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (title, lines) in zip(axes, panels):
        for name, label in lines:
            steps, values = zip(*data.curves[name])
            is_reference = name == "loss" and title != "Training loss"
            style = {"color": "0.6", "linewidth": 1} if is_reference else {"marker": "o" if len(steps) < 30 else None}
            ax.plot(steps, values, label=label, markersize=3, **style)
        best = summary["best_eval"].get(lines[0][0])
        if best is not None:
            ax.plot(
                [best["step"]], [best["value"]], "*", color="tab:red", markersize=12, label=f"best ({best['goal']})"
            )
        ax.set_title(title)
        ax.set_xlabel("global step")
        ax.grid(alpha=0.3)
        if title == "Learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if len(ax.get_lines()) > 1:
            ax.legend(fontsize="small")
    for ax in axes[len(panels) :]:
        fig.delaxes(ax)
    fig.suptitle(f"{summary['source']}  ({_num(summary['steps'])} steps)", fontsize="medium")
    fig.savefig(out, format="png", dpi=100)
    return [title for title, _ in panels]


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> ReportResult:
    """Read a run's history, draw its curves into a PNG and summarise it.

    Args:
        run_dir: A training output folder (``TrainingArguments.output_dir``), a ``checkpoint-*`` folder or a
            TensorBoard log folder.
        out: Where to write the PNG; default ``<run_dir>/report.png``. Parent folders are created.

    Returns:
        The PNG path, the panel titles in order and the summary dict.

    Raises:
        FileNotFoundError: ``run_dir`` is missing or holds no curves.
        ValueError: ``out`` does not end in ``.png``, or ``trainer_state.json`` cannot be parsed.
    """
    png_path = Path(run_dir) / "report.png" if out is None else Path(out)
    if png_path.suffix.lower() != ".png":
        raise ValueError(f"out={str(png_path)!r} must end in .png (the report is a PNG image); e.g. --out run.png")
    data = load_run(run_dir)
    summary = summarise(data)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    panels = plot_run(data, summary, png_path)
    return ReportResult(png_path=png_path, panels=panels, summary=summary)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m hf_lightning report``."""
    parser = argparse.ArgumentParser(
        prog="python -m hf_lightning report",
        description="Draw the training curves of a run into a PNG and print a short summary.",
    )
    parser.add_argument("output_dir", help="run folder: output_dir of a run, a checkpoint-* folder or TensorBoard logs")
    parser.add_argument("--out", default=None, help="PNG path to write (default: OUTPUT_DIR/report.png)")
    parser.add_argument("--no-summary", action="store_true", help="do not print the summary table")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of ``python -m hf_lightning report``.

    Args:
        argv: Arguments after ``report``; default ``sys.argv[1:]``.

    Returns:
        0 on success, 1 when there is nothing to draw or the input is invalid (the reason goes to stderr).
    """
    args = build_parser().parse_args(argv)
    try:
        result = write_report(args.output_dir, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not args.no_summary:
        print(format_summary(result.summary))
    print(f"report written to {result.png_path} (panels: {', '.join(result.panels)})")
    return 0


__all__ = [
    "EVAL_PREFIXES", "LOWER_IS_BETTER", "SPEED_SUFFIXES", "TB_ALIASES", "Curve", "ReportResult", "RunData",
    "build_parser", "find_event_dir", "find_trainer_state", "format_summary", "load_event_dir", "load_run",
    "load_trainer_state", "main", "plot_run", "summarise", "write_report",
]

if __name__ == "__main__":
    sys.exit(main())
