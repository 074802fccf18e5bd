"""Helpers of the multi-process tests: free loopback ports, bounded subprocesses, shared job results."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
#: Upper bound of one launched job (two processes on two shared cores).
JOB_TIMEOUT = 240


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def job_env(**extra: str) -> dict[str, str]:
    """The test environment without any launcher variables a parent process may carry, plus ``extra``."""
    launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR",
                "MASTER_PORT", "TORCHELASTIC_RUN_ID")
    env = {k: v for k, v in os.environ.items() if k not in launcher and not k.startswith("SLURM_")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    env.update(extra)
    return env


def torchrun(*args: str, nproc: int = 2, extra: tuple[str, ...] = ()) -> list[str]:
    """``python -m torch.distributed.run`` on loopback with a fresh port."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), *extra,
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]


def run_job(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    """Runs one launcher command to completion (bounded), failing with the log's tail."""
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env or job_env(), stdout=out, stderr=subprocess.STDOUT,
                              timeout=JOB_TIMEOUT, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:6])}... exited with {proc.returncode}:\n{log.read_text()[-4000:]}")


def run_nodes(cmds: list[list[str]], envs: list[dict[str, str]], log_dir: Path) -> None:
    """Starts one process per "node" at once and waits for all (bounded); kills the others if one fails."""
    with contextlib.ExitStack() as stack:
        procs = []
        for i, (cmd, env) in enumerate(zip(cmds, envs)):
            out = stack.enter_context(open(log_dir / f"node{i}.log", "w"))
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
        try:
            codes = [proc.wait(timeout=JOB_TIMEOUT) for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    if any(codes):
        tails = "\n".join((log_dir / f"node{i}.log").read_text()[-2000:] for i in range(len(procs)))
        pytest.fail(f"node exit codes {codes}:\n{tails}")


def read_result(folder: Path) -> dict:
    return json.loads((folder / "result.json").read_text())


@pytest.fixture(scope="session")
def facade_ddp(tmp_path_factory) -> dict:
    """The HF-style Trainer under torchrun, 2 processes x batch 4 (facade_job.py)."""
    out = tmp_path_factory.mktemp("facade_ddp")
    run_job(torchrun(str(HERE / "facade_job.py"), str(out), "4"), out / "job.log")
    return {**read_result(out), "dir": str(out)}


@pytest.fixture(scope="session")
def facade_single(tmp_path_factory) -> dict:
    """The same job in this process: 1 rank x batch 8 (the same global batch)."""
    from tests.distributed.facade_job import run

    out = tmp_path_factory.mktemp("facade_single")
    return {**run(str(out), 8), "dir": str(out)}
