"""The four workloads and the runs (variants) each compares. Standard library only: the parent process imports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: variant -> (runner, spec overrides, label). ``+gbl``: train_sampling_strategy / sampling_strategy group_by_length.
VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "raw": ("raw", {}, "raw PyTorch loop"),
    "hf": ("hf", {}, "transformers.Trainer"),
    "hf+gbl": ("hf", {"sampling": "group_by_length"}, "transformers.Trainer, group_by_length"),
    "pl": ("pl", {}, "lightning.Trainer + minimal module"),
    "hfl_trainer": ("hfl_trainer", {}, "hf_lightning.Trainer (HF-style door)"),
    "hfl_door": ("hfl_door", {}, "HFModule + HFDataModule (Lightning door)"),
    "hfl_door+gbl": ("hfl_door", {"sampling": "group_by_length"}, "Lightning door, group_by_length"),
}

#: Runs whose sample order is the raw loop's (the others group by length, in orders of their own).
SAME_ORDER = {"raw", "hf", "pl", "hfl_trainer", "hfl_door"}

_FIVE = ("raw", "hf", "pl", "hfl_trainer", "hfl_door")

_BASE: dict[str, Any] = {"seed": 42, "max_length": 128, "weight_decay": 0.01, "sampling": "random", "accumulate": 1}


@dataclass(frozen=True)
class Workload:
    """One comparison: its runs, its settings, the smaller settings of ``--quick``, and its default rounds."""

    title: str
    variants: list[str]
    spec: dict[str, Any]
    quick: dict[str, Any] = field(default_factory=dict)
    rounds: int = 3


WORKLOADS: dict[str, Workload] = {
    "tiny": Workload(
        "(a) + (d) tiny BERT from config (2 layers, hidden 32), batch 8: per-step overhead; then evaluate "
        "(loss + accuracy) and predict on 2,000 examples, batch 64", list(_FIVE),
        {"model": "tiny_bert", "batch_size": 8, "steps": 120, "warmup": 20, "lr": 5e-4,
         "eval_samples": 2000, "eval_batch_size": 64, "repeats": 6, "gate_steps": 20},
        quick={"steps": 8, "warmup": 2, "eval_samples": 128, "repeats": 2},
    ),
    "accum": Workload(
        "(c) tiny BERT, batch 8 x gradient accumulation 4", list(_FIVE),
        {"model": "tiny_bert", "batch_size": 8, "accumulate": 4, "steps": 30, "warmup": 5, "lr": 5e-4, "gate_steps": 5},
        quick={"steps": 4, "warmup": 1}, rounds=2,
    ),
    "text": Workload(
        # The length-grouped samplers' mega-batches are 50 batches of 8, each sorted longest first: the timed window
        # is steps 2 to 51, one mega-batch's length in all, which drops the first mega-batch's longest batch and adds
        # the second's. The first step is left out: it carries one-time costs (the loss-scaling probe, first touches
        # of memory, which inside a virtual machine vary by a second from process to process).
        "(b) MiniLM (22.7M parameters) on movie-review text, batch 8: dynamic padding, random order vs "
        "group_by_length", ["raw", "hf", "hf+gbl", "hfl_door", "hfl_door+gbl"],
        {"model": "minilm", "batch_size": 8, "steps": 51, "warmup": 1, "lr": 5e-5, "gate_steps": 5},
        quick={"steps": 3, "warmup": 1}, rounds=2,
    ),
}


def run_spec(workload: str, variant: str, quick: bool, threads: int) -> dict[str, Any]:
    """The settings one child process runs with."""
    w = WORKLOADS[workload]
    runner, overrides, _ = VARIANTS[variant]
    spec = {**_BASE, **w.spec, **(w.quick if quick else {}), **overrides}
    return {**spec, "workload": workload, "variant": variant, "runner": runner, "threads": threads}
