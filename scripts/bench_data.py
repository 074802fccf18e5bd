"""Data at scale: the quickstart trained for a few steps on 10^4, 10^5 and 10^6 generated CSV rows, twice each.

    python scripts/bench_data.py                    # 10^4, 10^5, 10^6 rows; prints the table
    python scripts/bench_data.py --update-docs      # ... and writes it into docs/data.md
    python scripts/bench_data.py --quick            # CI-sized (2,000 and 20,000 rows), a test runs it
    python scripts/bench_data.py --rows 100000 --num-proc 2

Each size gets its own CSV (`text,label` rows of random words, string labels `neg` / `neutral` / `pos`) and its own
empty datasets cache. The CLI door (`python -m hf_lightning fit --config configs/quickstart.yaml --data.init_args.
data_files {...}`) runs in a fresh process twice: the first run reads the CSV into Arrow and tokenises it; the second
run of the same command must find both in the cache. Every run reports the time from process start to the first
optimizer step (start-up), the time spent loading the CSV and tokenising, the peak resident memory (the process and
its `num_proc` workers) and whether it wrote new cache files. Tokenisation should grow linearly with the rows and
memory stay flat (the data are memory-mapped Arrow files, not Python objects).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "data.md"
BEGIN, END = "<!-- bench_data:begin (written by scripts/bench_data.py --update-docs) -->", "<!-- bench_data:end -->"
WORDS = ["good", "bad", "film", "plot", "actor", "scene", "story", "boring", "great", "slow", "funny", "music", "long", "dull", "brilliant", "moving", "cast", "script", "ending", "director", "camera", "dialogue", "character", "drama", "comedy", "thriller", "script", "visual", "score", "pace", "twist"]
LABELS = ("neg", "neutral", "pos")


def write_csv(path: Path, rows: int, seed: int) -> None:
    """`rows` lines of 8-40 random words with a string label; written in chunks (flat memory at 10^6 rows)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        f.write("text,label\n")
        for start in range(0, rows, 50_000):
            f.write("".join(f"{' '.join(rng.choices(WORDS, k=rng.randint(8, 40)))},{rng.choice(LABELS)}\n"
                            for _ in range(min(50_000, rows - start))))


def cache_files(cache: Path) -> set[str]:
    return {str(p.relative_to(cache)) for p in cache.rglob("*.arrow")}


def _child(spec_path: str) -> None:
    """One CLI run in this fresh process, with the data module's load and tokenisation timed."""
    spec = json.loads(Path(spec_path).read_text())
    from hf_lightning import HFDataModule, HFModule
    from hf_lightning.cli import main

    timings = {"load_s": 0.0, "tokenize_s": 0.0, "first_step": None}

    def timed(cls: type, name: str, key: str) -> None:
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            started = time.time()
            try:
                return original(self, *args, **kwargs)
            finally:
                timings[key] += time.time() - started
        setattr(cls, name, wrapper)

    timed(HFDataModule, "_load", "load_s")
    timed(HFDataModule, "preprocess", "tokenize_s")
    original_step = HFModule.training_step

    def first_step(self, *args, **kwargs):
        timings["first_step"] = timings["first_step"] or time.time()
        return original_step(self, *args, **kwargs)
    HFModule.training_step = first_step
    main(spec["argv"])
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    Path(spec["out"]).write_text(json.dumps({**timings, "rss_mb": own, "workers_rss_mb": workers}))


def run_size(rows: int, steps: int, num_proc: int | None, log_dir: Path) -> dict[str, Any]:
    """Two runs of the same command on a fresh CSV of `rows` rows and an empty cache."""
    with tempfile.TemporaryDirectory(prefix="hfl-data-") as tmp:
        work = Path(tmp)
        write_csv(work / "train.csv", rows, seed=rows)
        write_csv(work / "validation.csv", 200, seed=1)
        cache = work / "cache"
        files = json.dumps({"train": str(work / "train.csv"), "validation": str(work / "validation.csv")})
        argv = ["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.init_args.data_files", files,
                "--trainer.max_steps", str(steps), "--trainer.logger.init_args.save_dir", str(work / "runs")]
        if num_proc:
            argv += ["--data.init_args.preprocessing_num_workers", str(num_proc)]
        env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
        runs = []
        for attempt in (1, 2):
            before = cache_files(cache)
            spec = {"argv": argv, "out": str(work / f"result{attempt}.json")}
            (work / "spec.json").write_text(json.dumps(spec))
            spawned = time.time()
            with open(log_dir / f"rows{rows}-run{attempt}.log", "w") as log:
                proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(work / "spec.json")],
                                      stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{rows} rows, run {attempt} failed (exit {proc.returncode}): see {log.name}")
            result = json.loads(Path(spec["out"]).read_text())
            result["startup_s"] = result.pop("first_step") - spawned
            result["new_cache_files"] = len(cache_files(cache) - before)
            runs.append(result)
        csv_mb = (work / "train.csv").stat().st_size / 2**20
        cache_mb = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20
    return {"rows": rows, "csv_mb": csv_mb, "cache_mb": cache_mb, "first": runs[0], "second": runs[1]}


def render(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    base = results[0]
    lines = [
        (f"Measured {meta['date']} on {meta['machine']} (torch {meta['torch']}, datasets {meta['datasets']}, "
        f"{meta['steps']} training steps, preprocessing_num_workers={meta['num_proc']}). First run: empty cache; "
        "second run: the same command again."),
        "",
        ("| rows | CSV MB | load s | tokenise s | rows/s tokenised | start-up s (1st) | start-up s (2nd) | "
        "2nd / 1st | new cache files (2nd) | peak RSS MB (1st) | peak RSS MB (2nd) | tokenise s per row vs smallest |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    per_row = base["first"]["tokenize_s"] / base["rows"]
    for r in results:
        first, second = r["first"], r["second"]
        rss1 = max(first["rss_mb"], first["workers_rss_mb"])
        rss2 = max(second["rss_mb"], second["workers_rss_mb"])
        lines.append(
            f"| {r['rows']:,} | {r['csv_mb']:.1f} | {first['load_s']:.1f} | {first['tokenize_s']:.1f} | "
            f"{r['rows'] / max(first['tokenize_s'], 1e-9):,.0f} | {first['startup_s']:.1f} | {second['startup_s']:.1f} | "
            f"{second['startup_s'] / first['startup_s']:.2f} | {second['new_cache_files']} | {rss1:,.0f} | {rss2:,.0f} | "
            f"{first['tokenize_s'] / r['rows'] / per_row:.2f} |")
    return "\n".join(lines)


def update_docs(table: str) -> None:
    text = DOC.read_text()
    if BEGIN not in text:
        raise SystemExit(f"{DOC} has no '{BEGIN}' marker")
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(head + BEGIN + "\n" + table + "\n" + END + rest.split(END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child")
    parser.add_argument("--rows", type=int, nargs="+")
    parser.add_argument("--quick", action="store_true", help="2,000 and 20,000 rows, 2 steps")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--num-proc", type=int, default=None, help="preprocessing_num_workers (datasets' num_proc)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_data")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    if args.child:
        return _child(args.child)
    import platform

    import datasets
    import torch

    rows = args.rows or ([2_000, 20_000] if args.quick else [10_000, 100_000, 1_000_000])
    steps = args.steps or (2 if args.quick else 5)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in rows:
        started = time.time()
        results.append(run_size(n, steps, args.num_proc, args.out))
        print(f"{n:>9,} rows: {time.time() - started:6.1f}s", flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
            "torch": torch.__version__, "datasets": datasets.__version__, "steps": steps, "num_proc": args.num_proc}
    table = render(results, meta)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (args.out / "results.md").write_text(table + "\n")
    print(table)
    if args.update_docs:
        update_docs(table)


if __name__ == "__main__":
    main()
