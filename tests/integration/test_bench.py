"""scripts/bench.py: the CI-sized run's tables and parity; the raw loop's restated HF pieces; the same-round ratios."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from bench import common, report, train
from bench.workloads import SAME_ORDER, WORKLOADS

FIVE = ["raw", "hf", "pl", "hfl_trainer", "hfl_door"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_run_tables_and_parity(tmp_path):
    """Five fresh processes train the same tiny BERT in lockstep: same per-step losses, same evaluation; tables well
    formed."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    tiny = results["summary"]["workloads"]["tiny"]
    assert list(tiny["median"]) == FIVE
    for variant, fig in tiny["median"].items():
        for key in ("cpu_step_ms", "steps_per_s", "samples_per_s", "tokens_per_s", "startup_s", "rss_mb",
                    "final_loss", "eval_samples_per_s", "predict_samples_per_s"):
            assert fig[key] is not None and fig[key] > 0, (variant, key)
        # same seed, order, optimizer, schedule, clipping: the per-step losses agree with the raw loop's
        assert fig["parity"] is not None and fig["parity"] < 1e-4, (variant, fig["parity"])
        assert fig["eval_parity"] < 1e-4, (variant, fig["eval_parity"])
        assert fig["final_loss"] == pytest.approx(tiny["median"]["raw"]["final_loss"], abs=1e-4)
    run = results["runs"]["tiny"][0]["hfl_door"]
    assert len(run["losses"]) == WORKLOADS["tiny"].quick["steps"]
    # Lockstep: the five processes of the round were alive together, each paused at its first step and before each
    # of its 2 x 2 timed evaluate / predict calls (8 steps: no pause between steps, which come every 20)
    round_runs = results["runs"]["tiny"][0].values()
    assert max(r["child_start"] for r in round_runs) < min(r["end_wall"] for r in round_runs)
    assert all(r["pauses"] == 1 + 2 * WORKLOADS["tiny"].quick["repeats"] for r in round_runs)
    table = (tmp_path / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| run | CPU ms/step"))
    rows = [line for line in table.splitlines() if line.startswith("| ") and line.count("|") == header.count("|")]
    assert len(rows) >= 1 + 5 and "parity" in header
    assert "### Targets" in table and "no GPU" in table
    assert {t["variant"] for t in results["summary"]["targets"]} == {"hfl_trainer", "hfl_door"}
    assert all(t["met"] in (True, False) and t["ratio"] > 0 for t in results["summary"]["targets"])


def test_decay_groups_are_transformers_rule():
    """The raw loop restates Trainer.get_decay_parameter_names (so it need not import transformers.Trainer)."""
    common.seed_all(0)
    model = common.build_model("tiny_bert")
    groups = common.decay_parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    expected = set(transformers.Trainer.get_decay_parameter_names(None, model))
    assert {names[id(p)] for p in groups[0]["params"]} == expected
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["params"]


def test_linear_schedule_is_transformers_schedule():
    params = [torch.nn.Parameter(torch.zeros(1))]
    ours = train.linear_schedule(torch.optim.SGD(params, lr=0.1), 7)
    theirs = transformers.get_linear_schedule_with_warmup(torch.optim.SGD(params, lr=0.1), 0, 7)
    for _ in range(8):
        assert ours.get_last_lr() == theirs.get_last_lr()
        ours.optimizer.step(), theirs.optimizer.step()
        ours.step(), theirs.step()


def _fake_run(variant: str, cpu_ms: float, losses: list[float], wall_ms: float = 10.0) -> dict:
    n, warmup = len(losses), 1
    return {"spec": {"warmup": warmup, "accumulate": 1, "t_spawn": 0.0, "variant": variant},
            "step_ends": [i * wall_ms / 1000 for i in range(1, n + 1)], "cpu_ends": [i * cpu_ms / 1000 for i in range(1, n + 1)],
            "first_step_wall": 2.0, "first_step_cpu": 1.0, "first_step_perf": 0.0, "losses": losses,
            "batches": [(8, 80, 100)] * n, "rss_mb": 500.0, "load_start": 1.0}


def test_ratios_are_taken_within_a_round():
    """Round 1 is twice as slow for everyone (load): the ratios stay 1.2 and the parity column catches a bad loss."""
    rounds = []
    for scale in (1.0, 2.0):
        rounds.append({"raw": _fake_run("raw", 5 * scale, [1.0, 0.9, 0.8]),
                       "hf": _fake_run("hf", 6 * scale, [1.0, 0.9, 0.8]),
                       "pl": _fake_run("pl", 5 * scale, [1.0, 0.9, 0.8]),
                       "hfl_trainer": _fake_run("hfl_trainer", 6 * scale, [1.0, 0.9, 0.8]),
                       "hfl_door": _fake_run("hfl_door", 6 * scale, [1.0, 0.9, 0.85])})
    summary = report.summarise({"accum": rounds})
    median = summary["workloads"]["accum"]["median"]
    assert median["hf"]["x_raw"] == pytest.approx(1.2)
    assert median["hfl_door"]["parity"] == pytest.approx(0.05)
    assert median["hfl_trainer"]["parity"] == 0.0
    assert median["raw"]["samples_per_cpu_s"] == pytest.approx((8 / 0.005 + 8 / 0.010) / 2)  # median of 2 rounds
    step = next(t for t in summary["targets"] if t["variant"] == "hfl_door" and t["versus"] == "pl"
                and t["figure"] == "cpu_step_ms")
    assert step["ratio"] == pytest.approx(1.2) and step["min"] == pytest.approx(1.2) and not step["met"]
    assert "hfl_door" in SAME_ORDER


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_data_scale_quick_run_reuses_the_tokenisation_cache(tmp_path):
    """scripts/bench_data.py --quick: two sizes, each run twice in fresh processes; the first run writes the Arrow
    and tokenisation caches, the second (same command) writes none and spends less time tokenising."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_data.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [r["rows"] for r in results] == [2_000, 20_000]
    for r in results:
        first, second = r["first"], r["second"]
        assert first["new_cache_files"] >= 2 and second["new_cache_files"] == 0, r
        assert second["tokenize_s"] < first["tokenize_s"], r
        assert all(run["startup_s"] > 0 and run["rss_mb"] > 0 for run in (first, second))
    table = (tmp_path / "results.md").read_text()
    assert table.count("\n| 2") == 2 and "start-up s (2nd)" in table


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_session_quick_mode_runs_every_benchmark_variant_with_the_same_losses(tmp_path):
    """scripts/gpu_session.sh --quick, the one command of a GPU lease, on CPU: the GPU tests skip saying why, the
    strategy checks stop at "no CUDA", and scripts/bench_gpu.py --quick (tiny Llama, fp32, compile with the eager
    backend) runs the raw loop, both Trainers at their defaults and with the speed options, and regional compilation:
    all train, are timed, and log the same losses at the same steps (same data, order, optimizer and schedule)."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_session.sh"), "--quick"], capture_output=True,
                          text=True, cwd=ROOT, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text()
    assert "machine    no CUDA" in summary and "CUDA" in summary.split("gpu_tests", 1)[1], summary
    assert re.search(r"^bench +ok ", summary, re.MULTILINE) and re.search(r"^checks +exit 2 ", summary, re.MULTILINE)
    assert "| hfl_fast_blocks |" in summary, summary  # the benchmark's table, rendered from its saved results
    assert (tmp_path / "results.tgz").stat().st_size > 0
    tmp_path = tmp_path / "bench"
    results = json.loads((tmp_path / "results.json").read_text())
    runs = results["cases"]["llama-300m"]["variants"]
    assert list(runs) == ["raw", "hf_default", "hf_fast", "hfl_default", "hfl_fast", "hfl_fast_blocks"]
    reference = runs["raw"]["losses"]
    assert [step for step, _ in reference] == [2, 4, 6, 8]
    for variant, run in runs.items():
        assert run["samples_per_s"] > 0 and run["tokens_per_s"] == pytest.approx(run["samples_per_s"] * 64)
        assert [step for step, _ in run["losses"]] == [step for step, _ in reference], variant
        for (_, ours), (_, raw) in zip(run["losses"], reference):
            assert ours == pytest.approx(raw, rel=1e-3), variant
    assert results["cases"]["llama-300m"]["flops"] > 0
    table = (tmp_path / "results.md").read_text()
    assert table.count("\n| hfl_") == 3 and "| raw |" in table
