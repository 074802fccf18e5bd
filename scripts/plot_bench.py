"""Plots a ``scripts/bench.py`` results file: training steps/s, time relative to the raw loop, and the targets.

    python scripts/plot_bench.py [runs/bench/results.json] [docs/benchmarks.png]

Top left: optimizer steps per second of each run (bars: per CPU-second, the figure the comparisons use; dots: wall
clock, which on a shared machine also counts waiting for a core), median over rounds with the range over rounds.
Top right: CPU time per step relative to the raw loop of the same round. Bottom: each target's ratio (median, range
over rounds) against its threshold.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench.workloads import VARIANTS

COLORS = {"raw": "#7f7f7f", "hf": "#ff9d00", "hf+gbl": "#ffcc66", "pl": "#792ee5", "hfl_trainer": "#1f77b4",
          "hfl_door": "#2ca02c", "hfl_door+gbl": "#98df8a"}


def _per_round(workload: dict[str, Any], variant: str, key: str) -> list[float]:
    return [r[variant][key] for r in workload["rounds"] if r[variant].get(key) is not None]


def _grouped(ax: Any, workloads: dict[str, Any], value: Any, ylabel: str, title: str, wall: Any = None) -> None:
    names = list(workloads)
    for i, name in enumerate(names):
        variants = list(workloads[name]["median"])
        width = 0.8 / len(variants)
        for j, v in enumerate(variants):
            x = i + (j - (len(variants) - 1) / 2) * width
            values = value(workloads[name], v)
            mid = statistics.median(values)
            ax.bar(x, mid, width, color=COLORS[v], label=VARIANTS[v][2] if i == 0 or v.endswith("gbl") else None,
                   yerr=[[mid - min(values)], [max(values) - mid]], capsize=2, error_kw={"lw": 0.8})
            if wall is not None:
                ax.plot(x, statistics.median(wall(workloads[name], v)), "k.", ms=4)
    ax.set_xticks(range(len(names)), [n for n in names])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)


def plot(results: dict[str, Any], out: Path) -> None:
    workloads = results["summary"]["workloads"]
    fig = plt.figure(figsize=(14, 11))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.1])
    top = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])]
    _grouped(top[0], workloads, lambda w, v: [1000 / x for x in _per_round(w, v, "cpu_step_ms")],
             "optimizer steps / s", "steps per CPU-second (bars), per wall second (dots)",
             wall=lambda w, v: _per_round(w, v, "steps_per_s"))
    top[0].set_yscale("log")
    _grouped(top[1], workloads, lambda w, v: _per_round(w, v, "x_raw"), "CPU time per step / the raw loop's",
             "CPU time per step relative to the raw loop")
    top[1].axhline(1.0, color="k", lw=0.8)
    seen: dict[str, Any] = {}
    for ax in top:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    top[1].legend(seen.values(), seen.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    targets = results["summary"]["targets"]
    ax = fig.add_subplot(grid[1, :])
    for i, t in enumerate(targets):
        color = "#2ca02c" if t["met"] else "#d62728"
        ax.plot([t["min"], t["max"]], [i, i], color=color, lw=1.5)
        ax.plot(t["ratio"], i, "o", color=color)
        ax.plot(t["limit"], i, "|", color="k", ms=9, mew=1.5)
    ax.set_yticks(range(len(targets)), [f"{t['target']} [{t['workload']}: {t['variant']} / {t['versus']}]"
                                        for t in targets], fontsize=7)
    ax.invert_yaxis()
    ax.grid(axis="x", lw=0.3)
    ax.set_xlabel("ratio (CPU time where timed): dot = median over rounds, bar = range, | = needed; "
                  "green met, red not met")
    meta = results["meta"]
    fig.suptitle(f"{meta['command']}  ({meta['date']}; {meta['cpus']} CPU cores shared with other jobs, "
                 f"{meta['threads']} torch thread per run; no GPU)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0]) if args else ROOT / "runs" / "bench" / "results.json"
    out = Path(args[1]) if len(args) > 1 else ROOT / "docs" / "benchmarks.png"
    plot(json.loads(source.read_text()), out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
