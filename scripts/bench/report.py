"""From the runs' raw results to figures, same-round ratios, medians over rounds, targets and markdown tables.

Standard library only. Every ratio is computed between two runs of the same round, then the median (and the range)
over rounds is reported. Per-step, throughput and start-up comparisons are judged on CPU time (each run has one torch
thread, so on an idle core its wall time would be its CPU time); wall-clock figures are shown beside them.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.workloads import SAME_ORDER, VARIANTS, WORKLOADS


def _steady(times: list[float]) -> float:
    """The median of the calls after the first (all of them when there is one)."""
    return statistics.median(times[1:] or times)


def train_figures(res: dict[str, Any]) -> dict[str, Any]:
    """Figures of one run: training over the steps after ``warmup`` (from the first step's start when it is 0), then
    evaluation when the workload evaluates."""
    spec = res["spec"]
    warmup, accumulate, ends, cpu = spec["warmup"], spec["accumulate"], res["step_ends"], res["cpu_ends"]
    t0, c0 = (ends[warmup - 1], cpu[warmup - 1]) if warmup else (res["first_step_perf"], res["first_step_cpu"])
    steps, wall, cpu_s = len(ends) - warmup, ends[-1] - t0, cpu[-1] - c0
    batches = res["batches"][warmup * accumulate:len(ends) * accumulate]  # collation order == consumption order
    samples, tokens, padded = (sum(b[i] for b in batches) for i in range(3))
    fig = {"steps_per_s": steps / wall, "samples_per_s": samples / wall, "tokens_per_s": tokens / wall,
           "step_ms": 1000 * wall / steps, "cpu_step_ms": 1000 * cpu_s / steps, "samples_per_cpu_s": samples / cpu_s,
           "tokens_per_cpu_s": tokens / cpu_s, "real_token_share": tokens / padded,
           "startup_s": res["first_step_wall"] - spec["t_spawn"], "startup_cpu_s": res["first_step_cpu"],
           "rss_mb": res["rss_mb"], "final_loss": res["losses"][-1], "load": res["load_start"]}
    if "eval_wall" in res:
        n = res["eval_samples"]
        fig.update({"eval_samples_per_s": n / _steady(res["eval_wall"]),
                    "eval_samples_per_cpu_s": n / _steady(res["eval_cpu"]),
                    "eval_tokens_per_s": res["eval_tokens"] / _steady(res["eval_wall"]),
                    "first_eval_s": res["eval_wall"][0], "predict_samples_per_s": n / _steady(res["predict_wall"]),
                    "predict_samples_per_cpu_s": n / _steady(res["predict_cpu"]), "eval_loss": res["eval_loss"],
                    "eval_accuracy": res["eval_accuracy"]})
    return fig


def _relative(variant: str, fig: dict[str, Any], res: dict[str, Any], raw_fig: dict[str, Any],
              raw_res: dict[str, Any]) -> None:
    """Adds the same-round comparison with the raw loop (CPU time ratio, overhead, parity) to ``fig``."""
    fig["x_raw"] = fig["cpu_step_ms"] / raw_fig["cpu_step_ms"]
    fig["overhead_ms"] = fig["cpu_step_ms"] - raw_fig["cpu_step_ms"]
    same = variant in SAME_ORDER and len(res["losses"]) == len(raw_res["losses"])
    fig["parity"] = max(abs(a - b) for a, b in zip(res["losses"], raw_res["losses"])) if same else None
    if "eval_wall" in res:
        fig["eval_x_raw"] = raw_fig["eval_samples_per_cpu_s"] / fig["eval_samples_per_cpu_s"]
        fig["predict_x_raw"] = raw_fig["predict_samples_per_cpu_s"] / fig["predict_samples_per_cpu_s"]
        logits = max((abs(a - b) for row, ref in zip(res["logits"], raw_res["logits"]) for a, b in zip(row, ref)),
                     default=0.0)
        fig["eval_parity"] = max(abs(res["eval_loss"] - raw_res["eval_loss"]), logits,
                                 abs(res["eval_accuracy"] - raw_res["eval_accuracy"]))


def _median(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


#: (target, workload, variant, versus, CPU-based figure, wall-clock figure, op, limit); the ratio is
#: figure(variant) / figure(versus) within a round; met when the median over rounds of the CPU-based one is op limit.
TARGETS: list[tuple[str, str, str, str, str, str, str, float]] = [
    *[("per-step time within 1.05x of plain Lightning", w, v, "pl", "cpu_step_ms", "step_ms", "<=", 1.05)
      for w in ("tiny", "accum") for v in ("hfl_trainer", "hfl_door")],
    *[("per-step time no worse than transformers.Trainer", w, v, "hf", "cpu_step_ms", "step_ms", "<=", 1.0)
      for w in ("tiny", "accum") for v in ("hfl_trainer", "hfl_door")],
    *[("evaluate() at least as fast as transformers.Trainer", "tiny", v, "hf", "eval_samples_per_cpu_s",
       "eval_samples_per_s", ">=", 1.0) for v in ("hfl_trainer", "hfl_door")],
    *[("predict() at least as fast as transformers.Trainer", "tiny", v, "hf", "predict_samples_per_cpu_s",
       "predict_samples_per_s", ">=", 1.0) for v in ("hfl_trainer", "hfl_door")],
    *[("real-text samples/s >= 1.3x transformers.Trainer defaults", "text", v, "hf", "samples_per_cpu_s",
       "samples_per_s", ">=", 1.3) for v in ("hfl_door", "hfl_door+gbl")],
    ("same settings (both group_by_length): samples/s no lower", "text", "hfl_door+gbl", "hf+gbl",
     "samples_per_cpu_s", "samples_per_s", ">=", 1.0),
    *[("start-up (to the first step) within 1.2x of plain Lightning", w, v, "pl", "startup_cpu_s", "startup_s",
       "<=", 1.2) for w in ("tiny", "accum") for v in ("hfl_trainer", "hfl_door")],
    *[("peak RSS within 1.1x of transformers.Trainer", w, v, "hf", "rss_mb", "rss_mb", "<=", 1.1)
      for w in ("tiny", "accum", "text") for v in ("hfl_trainer", "hfl_door")],
]


def _meets(ratio: float, op: str, limit: float) -> bool:
    return ratio <= limit if op == "<=" else ratio >= limit


def _targets(per_round_all: dict[str, list[dict[str, dict[str, Any]]]]) -> list[dict[str, Any]]:
    out = []
    for label, w, v, versus, key, wall_key, op, limit in TARGETS:
        rounds = per_round_all.get(w, [])
        if not rounds or v not in rounds[0] or versus not in rounds[0] or key not in rounds[0][v]:
            continue
        ratios = [r[v][key] / r[versus][key] for r in rounds]
        med = statistics.median(ratios)
        out.append({"target": label, "workload": w, "variant": v, "versus": versus, "figure": key, "ratio": med,
                    "min": min(ratios), "max": max(ratios),
                    "wall_ratio": statistics.median(r[v][wall_key] / r[versus][wall_key] for r in rounds),
                    "op": op, "limit": limit, "met": _meets(med, op, limit),
                    "rounds_agree": len({_meets(x, op, limit) for x in ratios}) == 1})
    return out


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per workload: each round's figures, their medians over rounds; and the targets."""
    summary: dict[str, Any] = {"workloads": {}}
    per_round_all = {}
    for name, rounds in runs.items():
        per_round = []
        for results in rounds:
            figs = {v: train_figures(res) for v, res in results.items()}
            for v, fig in figs.items():
                _relative(v, fig, results[v], figs["raw"], results["raw"])
            per_round.append(figs)
            for res in results.values():  # the logits were only needed for the parity column
                res.pop("logits", None)
        keys = per_round[0]["raw"].keys()
        medians = {v: {k: (max((r[v][k] for r in per_round if r[v][k] is not None), default=None)
                           if k.endswith("parity") else _median([r[v][k] for r in per_round])) for k in keys}
                   for v in per_round[0]}
        loads = [r[v]["load"] for r in per_round for v in r]
        summary["workloads"][name] = {"title": WORKLOADS[name].title, "median": medians, "rounds": per_round,
                                      "load_min": min(loads), "load_max": max(loads)}
        per_round_all[name] = per_round
    summary["targets"] = _targets(per_round_all)
    return summary


def retarget(summary: dict[str, Any]) -> dict[str, Any]:
    """Recomputes the targets from a saved summary's per-round figures (after a change of targets or verdicts)."""
    summary["targets"] = _targets({name: w["rounds"] for name, w in summary["workloads"].items()})
    return summary


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.1e}"
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"
    return str(value)


TRAIN_COLUMNS = [("CPU ms/step", "cpu_step_ms"), ("overhead CPU ms/step vs raw", "overhead_ms"),
                 ("x raw (CPU)", "x_raw"), ("samples per CPU-s", "samples_per_cpu_s"),
                 ("wall steps/s", "steps_per_s"), ("wall samples/s", "samples_per_s"),
                 ("wall tokens/s", "tokens_per_s"), ("real/padded tokens", "real_token_share"),
                 ("start-up s (wall)", "startup_s"), ("start-up CPU s", "startup_cpu_s"),
                 ("peak RSS MB", "rss_mb"), ("final loss", "final_loss"), ("parity: max abs step-loss diff", "parity")]
EVAL_COLUMNS = [("evaluate samples per CPU-s", "eval_samples_per_cpu_s"), ("x raw (CPU)", "eval_x_raw"),
                ("wall evaluate samples/s", "eval_samples_per_s"), ("wall tokens/s", "eval_tokens_per_s"),
                ("first evaluate s (wall)", "first_eval_s"), ("predict samples per CPU-s", "predict_samples_per_cpu_s"),
                ("x raw (CPU) ", "predict_x_raw"), ("wall predict samples/s", "predict_samples_per_s"),
                ("eval_loss", "eval_loss"), ("accuracy", "eval_accuracy"),
                ("parity: max abs diff (loss, accuracy, logits)", "eval_parity")]


def _table(columns: list[tuple[str, str]], medians: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| run | " + " | ".join(c for c, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for v, fig in medians.items():
        lines.append(f"| {VARIANTS[v][2]} | " + " | ".join(_fmt(fig.get(k)) for _, k in columns) + " |")
    return lines


def _verdict(target: dict[str, Any]) -> str:
    verdict = "met" if target["met"] else "**not met**"
    return verdict if target["rounds_agree"] else f"{verdict} (rounds disagree)"


def render_markdown(results: dict[str, Any]) -> str:
    meta, summary = results["meta"], results["summary"]
    rounds = ", ".join(f"{n} {r}" for n, r in meta["rounds"].items())
    loads = [load for w in summary["workloads"].values() for load in (w["load_min"], w["load_max"])]
    busy = "shared with other jobs" if max(loads) >= 1.5 * meta["cpus"] else "otherwise idle"
    lines = [f"Command: `{meta['command']}` ({meta['date']}; rounds: {rounds}; wall time {meta['wall_s'] / 60:.1f} min). "
             f"Machine: {meta['cpus']} CPU cores, {busy} (1-minute load average {min(loads):.1f} to {max(loads):.1f}), "
             f"{meta['threads']} torch thread(s) per run, "
             f"no GPU; torch {meta['torch']}, lightning {meta['lightning']}, transformers {meta['transformers']}, "
             f"accelerate {meta['accelerate']}, Python {meta['python']}; hf_lightning at commit {meta['commit']}"
             + (f" with local changes to {', '.join(meta['changed'])}" if meta["changed"] else "") + ".", ""]
    for w in summary["workloads"].values():
        note = (f"Medians over rounds; ratios within a round; parity is the maximum over rounds. 1-minute load average "
                f"when the runs started: {w['load_min']:.1f} to {w['load_max']:.1f}.")
        lines += [f"### {w['title']}", "", note, ""]
        lines += _table(TRAIN_COLUMNS, w["median"]) + [""]
        if "eval_loss" in w["median"]["raw"]:
            lines += _table(EVAL_COLUMNS, w["median"]) + [""]
    header = ("| target | run | versus | workload | ratio (median; timed on CPU) | range over rounds | ratio, wall clock "
              "| needed | met |")
    lines += ["### Targets", "", header, "|---|---|---|---|---|---|---|---|---|"]
    for t in summary["targets"]:
        lines.append(f"| {t['target']} | {VARIANTS[t['variant']][2]} | {VARIANTS[t['versus']][2]} | {t['workload']} "
                     f"| {t['ratio']:.3f} | {t['min']:.3f} to {t['max']:.3f} | {t['wall_ratio']:.3f} "
                     f"| {t['op']} {t['limit']} | {_verdict(t)} |")
    return "\n".join(lines) + "\n"
