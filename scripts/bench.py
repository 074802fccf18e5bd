"""Benchmarks: the same training and evaluation through a raw PyTorch loop, transformers.Trainer, plain Lightning and
hf_lightning's two doors.

    python scripts/bench.py --update-docs        # the full run; writes docs/benchmarks.md and docs/benchmarks.png
    python scripts/bench.py --quick              # CI-sized: workload tiny, 1 round, a few steps
    python scripts/bench.py --workloads text --rounds 2
    python scripts/bench.py --from-results runs/bench/results.json --update-docs   # re-publish a saved run

Every run is a fresh subprocess (``--child``), so start-up, imports and peak memory are each door's own. The runs
of a round are in lockstep (`run_round`, `bench.common.Gate`): each starts alone and runs up to its first optimizer
step, then they take turns, a stretch of steps or one evaluate / predict call each, so all see the same machine (the
host's load drifts over seconds). The starting order rotates over the rounds (A B C D E, then B C D E A, ...); every
ratio is taken between runs of the same round, and the tables show the median over rounds. Per-step and start-up comparisons use each process's CPU time (each run has one torch thread): on cores
shared with other jobs, wall time also counts the time a process waited for a core. Results:
``runs/bench/results.json`` (every run), ``runs/bench/results.md`` (the tables, also printed); ``--update-docs``
writes the tables into docs/benchmarks.md and the plot (scripts/plot_bench.py) into docs/benchmarks.png.

The five runs train the same model on the same data with the same seed, sample order (``torch.randperm(n,
generator=manual_seed(seed + epoch))``, transformers' order), AdamW (fused, transformers' decay groups), linear
schedule, clipping at 1.0 and fp32; the parity column is the largest difference of a per-step loss from the raw loop's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper package scripts/bench/

from bench.report import render_markdown, retarget, summarise
from bench.workloads import WORKLOADS, run_spec

DEFAULT_OUT = ROOT / "runs" / "bench"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin (written by scripts/bench.py --update-docs) -->", "<!-- bench:end -->"


def _child(spec_path: str) -> None:
    """Runs one measurement in this (fresh) process and writes its JSON result."""
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                       "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}.items():
        os.environ.setdefault(key, value)
    spec = json.loads(Path(spec_path).read_text())
    load_start = os.getloadavg()[0]
    child_start = time.time()
    import torch

    torch.set_num_threads(spec["threads"])
    from bench import common
    from bench.evaluate import measure
    from bench.train import RUNNERS

    if spec.get("gate_fd") is not None:
        os.set_inheritable(spec["gate_fd"], False)  # a process this one starts does not hold the parent's pipe open
        common.GATE = common.Gate(spec.get("gate_steps", 0), spec["gate_fd"])

    out = RUNNERS[spec["runner"]](spec)
    rec = out["recorder"]
    result = {"first_step_wall": rec.first_step, "first_step_cpu": rec.first_step_cpu,
              "first_step_perf": rec.first_step_perf, "step_ends": rec.step_ends, "cpu_ends": rec.cpu_ends,
              "losses": rec.step_losses(), "batches": list(out["collator"].batches)}
    if "evaluate" in out:  # after training: the door's own evaluate / predict on the trained model
        result.update(measure(spec, out))
    result.update(spec=spec, child_start=child_start, rss_mb=common.peak_rss_mb(), load_start=load_start,
                  load_end=common.load_average(), threads=torch.get_num_threads(), end_wall=time.time(),
                  pauses=common.GATE.pauses)
    Path(spec["out"]).write_text(json.dumps(result))


class _Run:
    """One child process of a round, paused at its `bench.common.Gate` until the parent lets it go on."""

    def __init__(self, spec: dict[str, Any], folder: str, log_path: Path) -> None:
        os.makedirs(folder)
        read_fd, write_fd = os.pipe()
        self.spec = {**spec, "workdir": folder, "out": os.path.join(folder, "result.json"), "gate_fd": write_fd}
        spec_path = os.path.join(folder, "spec.json")
        self.log_path = log_path
        self.reader = os.fdopen(read_fd, "rb", buffering=0)
        self.log = open(log_path, "w")  # noqa: SIM115 (closed in close)
        self.alive = True
        try:
            self.spec["t_spawn"] = time.time()  # start-up is measured from here to the first optimizer step
            Path(spec_path).write_text(json.dumps(self.spec))
            self.proc: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--child", spec_path], stdin=subprocess.PIPE,
                stdout=self.log, stderr=subprocess.STDOUT, cwd=folder, pass_fds=(write_fd,))
        except BaseException:
            self.proc = None
            self.close()
            raise
        finally:
            os.close(write_fd)  # the child's copy is its own: the parent reads an end of file when the child ends

    def wait(self) -> bool:
        """Waits until the run pauses (True) or ends (False)."""
        self.alive = self.reader.read(1) == b"r"
        return self.alive

    def go(self) -> bool:
        """Lets the run go on until its next pause; False once it has ended."""
        self.proc.stdin.write(b"g\n")
        self.proc.stdin.flush()
        return self.wait()

    def close(self) -> None:
        """Stops the process if it still runs; closes the pipe and the log (safe to call twice)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
        self.reader.close()
        self.log.close()

    def finish(self) -> dict[str, Any]:
        self.proc.stdin.close()
        code = self.proc.wait()
        self.close()
        if code != 0:
            tail = self.log_path.read_text()[-4000:]
            raise RuntimeError(f"{self.spec['workload']} / {self.spec['variant']} failed (exit {code}):\n{tail}")
        return json.loads(Path(self.spec["out"]).read_text())


def run_round(specs: list[dict[str, Any]], log_paths: list[Path]) -> list[dict[str, Any]]:
    """The runs of one round in lockstep (`bench.common.Gate`): each is started alone and runs up to its first
    optimizer step (so start-up and imports are timed on their own), then the runs take turns, one stretch of steps
    (or one evaluate / predict call) each, until all have ended. Returns their results, in order."""
    with tempfile.TemporaryDirectory(prefix="hfl-bench-") as tmp:
        runs: list[_Run] = []
        try:
            for i, (spec, log_path) in enumerate(zip(specs, log_paths, strict=True)):
                runs.append(_Run(spec, os.path.join(tmp, f"{i}-{spec['variant']}"), log_path))
                runs[-1].wait()
            while any(run.alive for run in runs):
                for run in runs:
                    if run.alive:
                        run.go()
            return [run.finish() for run in runs]
        finally:
            for run in runs:
                run.close()


def run_all(workloads: list[str], rounds: int | None, quick: bool, threads: int, out_dir: Path) -> dict[str, Any]:
    """Every workload's variants, in lockstep within a round and rotated over the rounds; returns every run's raw
    result."""
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in workloads:
        variants = WORKLOADS[name].variants
        runs[name] = []
        n_rounds = rounds or (1 if quick else WORKLOADS[name].rounds)
        for r in range(n_rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            started = time.time()
            results = run_round([run_spec(name, variant, quick, threads) for variant in order],
                                [logs / f"{name}-r{r}-{variant}.log" for variant in order])
            loads = ", ".join(f"{res['load_start']:.1f}" for res in results)
            print(f"[{name} round {r + 1}/{n_rounds}] {' '.join(order)}: {time.time() - started:.1f}s (load {loads})",
                  flush=True)
            runs[name].append(dict(zip(order, results, strict=True)))
    return runs


def update_docs(markdown: str) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n{markdown.strip()}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: workload (a), 1 round, a few steps.")
    parser.add_argument("--workloads", default=None,
                        help=f"Comma-separated subset of {','.join(WORKLOADS)} (default: all; --quick: tiny).")
    parser.add_argument("--rounds", type=int, default=None,
                        help="Rounds of interleaved runs (default: the workload's, 3 or 2; --quick: 1).")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run. 1 by default: on cores shared with other jobs, a parallel region "
                             "waits for its slowest thread, and a descheduled one stalls whole steps.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Folder of results.json / results.md / logs.")
    parser.add_argument("--update-docs", action="store_true",
                        help="Write the tables into docs/benchmarks.md and the plot into docs/benchmarks.png.")
    parser.add_argument("--from-results", type=Path, default=None,
                        help="Render (and with --update-docs publish) a saved results.json instead of running.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0
    if args.from_results:
        results = json.loads(args.from_results.read_text())
        retarget(results["summary"])
        return _publish(results, args.from_results, args.update_docs)
    names = args.workloads.split(",") if args.workloads else (["tiny"] if args.quick else list(WORKLOADS))
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(WORKLOADS)}")
    command = "python scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"command": command.strip(), "quick": args.quick, "threads": args.threads, "cpus": os.cpu_count(),
            "python": sys.version.split()[0], "platform": sys.platform, "date": time.strftime("%Y-%m-%d %H:%M"),
            **_versions()}
    started = time.time()
    runs = run_all(names, args.rounds, args.quick, args.threads, args.out)
    meta.update(wall_s=time.time() - started, rounds={n: len(r) for n, r in runs.items()})
    summary = summarise(runs)
    results = {"meta": meta, "summary": summary, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return _publish(results, args.out / "results.json", args.update_docs)


def _publish(results: dict[str, Any], path: Path, docs: bool) -> int:
    markdown = render_markdown(results)
    path.with_suffix(".md").write_text(markdown)
    print(markdown)
    if docs:
        update_docs(markdown)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_bench.py"), str(path),
                        str(ROOT / "docs" / "benchmarks.png")], check=True)
    return 0


def _versions() -> dict[str, str]:
    """Library versions, and the hf_lightning commit with the files that differed from it when the run started."""
    from importlib.metadata import version

    out = {name: version(name) for name in ("torch", "lightning", "transformers", "accelerate")}
    import importlib.util

    package = Path(importlib.util.find_spec("hf_lightning").origin).parent  # the code the runs import
    git = ["git", "-C", str(package.parent)]
    try:
        out["commit"] = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       check=True).stdout.strip()
        changed = subprocess.run([*git, "status", "--porcelain", "--", "hf_lightning"], capture_output=True,
                                 text=True, check=True).stdout.split("\n")
        out["changed"] = sorted(line[3:] for line in changed if line.strip())
    except (OSError, subprocess.CalledProcessError):
        out["commit"], out["changed"] = "unknown", []
    return out


if __name__ == "__main__":
    sys.exit(main())
