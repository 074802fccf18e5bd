"""Per-step overhead of each hf_lightning callback on the quickstart model (MiniLM, movie reviews, batch 32 x 64).

    python scripts/callback_overhead.py [--steps 12] [--rounds 2] [--warmup 2]

Every variant trains the same freshly seeded model for ``--steps`` optimizer steps with a TensorBoard logger; the
step time is the wall time between consecutive ``on_train_batch_start`` calls, so it contains every hook of the step.
Variants run interleaved (round-robin, ``--rounds`` times) in one process. Two numbers per variant, both against the
baseline (HFFlow alone, as quickstart.yaml configures it) of the same run:
- ``step ratio``: median step time over the baseline's (end to end, but noisy on a shared machine);
- ``hook ms/step`` and ``hook %``: the time spent in the callback's own Lightning hooks, measured by Lightning's
  ``SimpleProfiler`` (``[Callback]<name>.<hook>`` actions), per step and as a share of the baseline step. Robust to
  load from other processes; it leaves out work the callback does in torch optimizer hooks (Warmup's lr scaling,
  HFFlow's on_optimizer_step).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.profilers import SimpleProfiler
from transformers import TrainingArguments

from hf_lightning import HFDataModule, HFModule, OptimizerSettings
from hf_lightning.callbacks.grad_monitor import GradientMonitor
from hf_lightning.callbacks.hf_flow import HFFlow
from hf_lightning.callbacks.throughput import HFThroughputMonitor
from hf_lightning.callbacks.warmup import Warmup


class StepTimer(L.Callback):
    """Wall time between consecutive training-batch starts (the whole step, every hook included)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last is not None:
            self.times.append(time.perf_counter() - self._last)


def _flow(**kwargs: Any) -> HFFlow:
    return HFFlow(logging_steps=10, **kwargs)  # quickstart.yaml's logging (its single evaluation is left out)


VARIANTS: dict[str, Callable[[], list[L.Callback]]] = {
    "baseline (HFFlow)": lambda: [_flow()],
    "GradientMonitor()": lambda: [_flow(), GradientMonitor()],
    "GradientMonitor(layer_depth=5)": lambda: [_flow(), GradientMonitor(layer_depth=5)],
    "GradientMonitor(layer_depth=5, histograms, every step)": lambda: [
        _flow(), GradientMonitor(layer_depth=5, histograms=True, log_every_n_steps=1)],
    "GradientMonitor(on_nonfinite=skip_step)": lambda: [_flow(), GradientMonitor(on_nonfinite="skip_step")],
    "Warmup(0.1, cosine)": lambda: [_flow(), Warmup(warmup_steps=0.1, shape="cosine")],
    "HFThroughputMonitor()": lambda: [_flow(), HFThroughputMonitor()],
    "HFFlow(include_num_input_tokens_seen=non_padding)": lambda: [HFFlow(args=TrainingArguments(
        "hf_lightning_output", report_to=[], logging_steps=10, include_num_input_tokens_seen="non_padding"))],
}


def run_variant(make: Callable[[], list[L.Callback]], data: HFDataModule, steps: int, root: str,
                ) -> tuple[list[float], float]:
    """Trains ``steps`` optimizer steps with the variant's callbacks; returns the step times and the seconds spent
    in the hooks of the variant's last callback (the one measured)."""
    L.seed_everything(42, verbose=False)
    module = HFModule(model="minilm", task="sequence-classification", num_labels=data.num_labels,
                      optimization=OptimizerSettings(learning_rate=1e-4), metrics=[])
    timer, callbacks, profiler = StepTimer(), make(), SimpleProfiler(dirpath=root, filename="profile")
    trainer = L.Trainer(max_steps=steps, callbacks=[*callbacks, timer], logger=TensorBoardLogger(root, name="overhead"),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False, profiler=profiler)
    trainer.fit(module, data)
    prefix = f"[Callback]{callbacks[-1].state_key}."
    hooks = sum(sum(d) for action, d in profiler.recorded_durations.items() if action.startswith(prefix))
    return timer.times, hooks


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over all variants")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of each run left out")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run (besides the baseline)")
    opts = parser.parse_args(argv)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = HFDataModule(dataset="movie_reviews", max_length=64, batch_size=32, eval_batch_size=128)
    names = [n for n in VARIANTS if opts.only is None or n.startswith("baseline") or n in opts.only]
    times: dict[str, list[float]] = {name: [] for name in names}
    hooks = dict.fromkeys(names, 0.0)
    with tempfile.TemporaryDirectory() as root:
        for _ in range(opts.rounds):
            for name in names:
                step_times, hook_seconds = run_variant(VARIANTS[name], data, opts.steps, root)
                times[name] += step_times[opts.warmup:]
                hooks[name] += hook_seconds / (opts.steps * opts.rounds)
    base = statistics.median(times[names[0]])
    results = {name: (statistics.median(t), statistics.median(t) / base, hooks[name]) for name, t in times.items()}
    print("| callback | median step (ms) | step ratio | hook ms/step | hook % of step |\n|---|---:|---:|---:|---:|")
    for name, (median, ratio, hook) in results.items():
        print(f"| {name} | {median * 1000:.0f} | {ratio:.3f} | {hook * 1000:.2f} | {100 * hook / base:.2f} |")
    return results


if __name__ == "__main__":
    main()
