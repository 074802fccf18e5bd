"""Reading a run's logged history for `hf_lightning.report`: curves and run facts (`RunData`) under canonical names
(the ``trainer_state.json`` keys). Sources, in order: ``trainer_state.json`` in the run folder or its newest
``checkpoint-*`` folder; else TensorBoard event files below it (HF tags such as ``train/loss`` and ``eval/accuracy``,
or Lightning-style tags such as ``train_loss``, ``val_loss``, ``lr-AdamW``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Eval speed metrics are summarised (mean), never plotted.
SPEED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")
# TensorBoard tag -> canonical name (the trainer_state.json key). HF's TensorBoardCallback writes `train/<key>` and
# `eval/<key>` (transformers.integrations.rewrite_logs); Lightning writes the names given to `self.log`.
_TB_TAGS = {
    "loss": ("train/loss", "train_loss", "train_loss_step", "loss"),
    "learning_rate": ("train/learning_rate", "learning_rate", "lr"),
    "grad_norm": ("train/grad_norm", "grad_norm", "grad_2.0_norm_total"),  # last: lightning's grad_norm utility
    "epoch": ("train/epoch", "epoch"),
    "train_runtime": ("train/train_runtime",),
    "train_loss": ("train/train_loss",),
}
TB_ALIASES = {tag: name for name, tags in _TB_TAGS.items() for tag in tags}
EVAL_PREFIXES = ("eval/", "eval_", "val/", "val_", "validation/", "validation_")

Curve = list[tuple[int, float]]


@dataclass
class RunData:
    """Curves and run facts read from one source.

    Attributes:
        source: The file or folder the data came from.
        curves: Canonical name (``loss``, ``learning_rate[:tag]``, ``grad_norm``, ``eval_<metric>``) -> points.
        facts: Run-level values: ``global_step``, ``epochs``, ``train_loss``, ``runtime_s``, ``runtime_source``,
            ``best_checkpoint``, ``best_metric``, ``best_step`` (each may be missing).
    """

    source: str
    curves: dict[str, Curve] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


def _kind(name: str) -> str | None:
    """The panel family of a canonical curve name, or None when it is not plotted or summarised."""
    if name.startswith("eval_"):
        return "speed" if name.endswith(SPEED_SUFFIXES) else "eval"
    return {"loss": "train_loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm"}.get(name.split(":")[0])


def _plottable(data: RunData) -> bool:
    return any(_kind(name) not in (None, "speed") and points for name, points in data.curves.items())


def find_trainer_state(run_dir: Path) -> Path | None:
    """``run_dir/trainer_state.json``, else the one in the newest ``checkpoint-*`` folder, else None."""
    from transformers.trainer_utils import get_last_checkpoint  # newest by step number, as Trainer resumes

    direct = run_dir / "trainer_state.json"
    if direct.is_file():
        return direct
    last = get_last_checkpoint(str(run_dir))
    if last is not None and (Path(last) / "trainer_state.json").is_file():
        return Path(last) / "trainer_state.json"
    return None


def load_trainer_state(path: Path) -> RunData:
    """Read a ``trainer_state.json`` (transformers' ``TrainerState`` format) into curves and facts."""
    from transformers import TrainerState

    try:
        state = TrainerState.load_from_json(str(path))
    except (ValueError, TypeError) as err:  # bad JSON, or keys this transformers version does not know
        raise ValueError(f"could not read {path} as a transformers TrainerState JSON file: {err}") from err
    data = RunData(source=str(path))
    data.facts.update(
        global_step=state.global_step,
        epochs=state.epoch,
        best_checkpoint=state.best_model_checkpoint,
        best_metric=state.best_metric,
        best_step=state.best_global_step,
    )
    for record in state.log_history:
        step = record.get("step")
        if step is None:
            continue
        if "train_runtime" in record:
            data.facts.update(runtime_s=record["train_runtime"], runtime_source="train_runtime")
        if "train_loss" in record:
            data.facts["train_loss"] = record["train_loss"]
        for key, value in record.items():
            if _kind(key) is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                data.curves.setdefault(key, []).append((int(step), float(value)))
    return data


def _tb_name(tag: str) -> str | None:
    """Canonical name for a TensorBoard scalar tag, or None when the report does not use it."""
    if tag in TB_ALIASES:
        return TB_ALIASES[tag]
    if tag.startswith("lr-"):  # lightning's LearningRateMonitor: lr-<Optimizer>[/pg<i>]
        return f"learning_rate:{tag}"
    for prefix in EVAL_PREFIXES:
        if tag.startswith(prefix):
            metric = tag[len(prefix) :].replace("/", "_")
            return "eval_" + metric.removesuffix("_epoch")
    return None


def find_event_dir(run_dir: Path) -> Path | None:
    """The folder under ``run_dir`` holding the most recently written TensorBoard event file, or None.

    Each run writes its own folder (``runs/<date>_<host>``, ``lightning_logs/version_<n>``); the newest one is
    read so that two runs in one output folder are never mixed.
    """
    files = [p for p in run_dir.rglob("events.out.tfevents.*") if p.is_file()]
    if not files:
        return None
    return max(files, key=lambda p: p.stat().st_mtime).parent


def load_event_dir(event_dir: Path) -> RunData:
    """Read every scalar of the event files in ``event_dir`` (tensorboard's ``EventAccumulator``)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    accumulator = EventAccumulator(str(event_dir), size_guidance={SCALARS: 0})  # 0 = keep every point
    accumulator.Reload()
    data = RunData(source=str(event_dir))
    wall_times: list[float] = []
    for tag in accumulator.Tags()[SCALARS]:
        events = accumulator.Scalars(tag)
        wall_times.extend(e.wall_time for e in events)
        name = _tb_name(tag)
        if name is None or not events:
            continue
        if name == "epoch":
            # HF logs the fractional epoch; Lightning logs the 0-based index of the current epoch.
            top = max(e.value for e in events)
            data.facts["epochs"] = top if tag == "train/epoch" else top + 1
        elif name in ("train_runtime", "train_loss"):
            key = "runtime_s" if name == "train_runtime" else "train_loss"
            data.facts[key] = events[-1].value
            if name == "train_runtime":
                data.facts["runtime_source"] = "train_runtime"
        else:
            data.curves.setdefault(name, []).extend((int(e.step), float(e.value)) for e in events)
    for points in data.curves.values():
        points.sort(key=lambda p: p[0])
    if wall_times and "runtime_s" not in data.facts:
        data.facts.update(runtime_s=max(wall_times) - min(wall_times), runtime_source="event timestamps")
    steps = [s for points in data.curves.values() for s, _ in points]
    data.facts["global_step"] = max(steps, default=0)
    return data


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Find and read the logged history of a run (see the module docstring for the order of sources).

    Raises:
        FileNotFoundError: ``run_dir`` does not exist, or holds no curve to draw.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run_dir {str(root)!r} is not a folder; pass the output_dir of a training run")
    state_path = find_trainer_state(root)
    if state_path is not None:
        data = load_trainer_state(state_path)
        if _plottable(data):
            return data
    event_dir = find_event_dir(root)
    if event_dir is not None:
        data = load_event_dir(event_dir)
        if _plottable(data):
            return data
    found = [f"{state_path} (no logged curves)"] if state_path else []
    found += [f"event files in {event_dir} (no known tags)"] if event_dir else []
    raise FileNotFoundError(
        f"no training curves found under {str(root)!r}: looked for trainer_state.json in that folder and in its "
        "newest checkpoint-* folder, then for TensorBoard event files (events.out.tfevents.*) below it"
        + (f"; found only {', '.join(found)}" if found else "")
        + ". Pass the output_dir of a run that logged (logging_steps > 0) or a TensorBoard log folder."
    )
