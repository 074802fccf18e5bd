"""Runs README command 1 as a new user would: in a fresh clone of this repository, with a new venv, exactly as the
README states it (the line is read from the README, so the check cannot drift from what users copy).

    python3 scripts/readme_check.py [--min-accuracy 0.80] [--keep]

Fails unless the command exits 0 and the run's ``eval_results.json`` shows ``eval_accuracy`` >= the minimum.
Prints the install and training wall times. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_command(number: int, readme: str = os.path.join(ROOT, "README.md")) -> str:
    """The shell line under ``# <number>.`` in the README's first bash block."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    block = re.search(r"```bash\n(.*?)```", text, re.DOTALL)
    if block is None:
        raise SystemExit("README.md has no ```bash block with the set-up commands.")
    lines = block.group(1).splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"#\s*{number}\.", line.strip()):
            command = next((nxt.strip() for nxt in lines[i + 1:] if nxt.strip()), "")
            if command and not command.startswith("#"):
                return command
    raise SystemExit(f"README.md: no command under '# {number}.' in its first bash block.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-accuracy", type=float, default=0.80)
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    parser.add_argument("--then", action="append", default=[], metavar="COMMAND",
                        help="another command to run afterwards in the clone's new venv (e.g. another first-step "
                             "config); each must exit 0")
    opts = parser.parse_args()
    command = readme_command(1)
    print(f"README command 1: {command}", flush=True)
    if "--dev" in command:
        raise SystemExit("README command 1 installs the dev extra: it must be the plain user install.")
    clone = tempfile.mkdtemp(prefix="hfl_readme_")
    try:
        subprocess.run(["git", "clone", "-q", ROOT, clone], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        # the caller's venv (if any) must not leak into the new user's shell
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                      if not p.startswith(os.path.join(ROOT, ".venv")))
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        start = time.time()
        done = subprocess.run(["bash", "-c", command], cwd=clone, env=env, check=False)
        wall = time.time() - start
        if done.returncode != 0:
            print(f"FAIL: README command 1 exited {done.returncode} after {wall:.0f} s", file=sys.stderr)
            return 1
        found = sorted(glob.glob(os.path.join(clone, "runs", "**", "eval_results.json"), recursive=True),
                       key=os.path.getmtime)
        if not found:
            print("FAIL: README command 1 wrote no eval_results.json under runs/", file=sys.stderr)
            return 1
        with open(found[-1], encoding="utf-8") as f:
            results = json.load(f)
        accuracy = results.get("eval_accuracy")
        print(f"README command 1: exit 0 in {wall:.0f} s (install + training); {os.path.relpath(found[-1], clone)}: "
              f"eval_accuracy={accuracy}", flush=True)
        if accuracy is None or accuracy < opts.min_accuracy:
            print(f"FAIL: eval_accuracy {accuracy} < {opts.min_accuracy}", file=sys.stderr)
            return 1
        for extra in opts.then:
            start = time.time()
            done = subprocess.run(["bash", "-c", f". .venv/bin/activate && {extra}"], cwd=clone, env=env, check=False)
            print(f"then: {extra}: exit {done.returncode} in {time.time() - start:.0f} s", flush=True)
            if done.returncode != 0:
                return 1
        return 0
    finally:
        if opts.keep:
            print(f"clone kept at {clone}")
        else:
            shutil.rmtree(clone, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
