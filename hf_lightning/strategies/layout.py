"""Where the launcher put this process (devices per node and nodes: torchrun, srun, or one process), and a clean exit."""

from __future__ import annotations

import atexit
import logging
import os
import re
from collections.abc import Mapping
from datetime import timedelta


def launch_layout(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(devices per node, num_nodes)`` of the launcher that started this process.

    torchrun / torchelastic set ``LOCAL_WORLD_SIZE`` and ``WORLD_SIZE``; ``srun`` sets ``SLURM_NTASKS_PER_NODE`` and
    ``SLURM_NNODES`` (Lightning's cluster environments then assign the ranks). Anything else is one process.
    """
    env = os.environ if env is None else env
    if "LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env:
        local = int(env["LOCAL_WORLD_SIZE"])
        return local, max(int(env["WORLD_SIZE"]) // local, 1)
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        nodes = int(env.get("SLURM_NNODES", "1"))
        per_node = re.match(r"\d+", env.get("SLURM_NTASKS_PER_NODE", "")) or None
        return (int(per_node.group()) if per_node else int(env["SLURM_NTASKS"]) // nodes), nodes
    return 1, 1


def launched_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's global rank as the launcher numbered it (torchrun's ``RANK``, srun's ``SLURM_PROCID``; else 0),
    before any process group exists."""
    env = os.environ if env is None else env
    return int(env.get("RANK", env.get("SLURM_PROCID", "0")))


_EXIT_REGISTERED = False
#: How long a rank waits at exit for the others before tearing its process group down anyway.
EXIT_BARRIER_TIMEOUT = timedelta(seconds=60)


def synchronize_exit() -> None:
    """At interpreter exit, ranks meet once (bounded wait) and destroy the default process group together.

    Without it a gloo rank that is still tearing down its connections when its peer has exited can abort
    ("terminate called without an active exception", SIGABRT) and fail the whole torchrun job after the work is done;
    on CUDA, torch asks scripts to destroy the process group before exit. Registered once per process by `HFFlow`
    when the trainer runs on several processes; a rank that never arrives (killed) costs the others
    `EXIT_BARRIER_TIMEOUT`, after which they exit normally.
    """
    global _EXIT_REGISTERED
    if not _EXIT_REGISTERED:
        _EXIT_REGISTERED = True
        atexit.register(leave_process_group)


def leave_process_group() -> None:
    """Ranks meet (gloo: a bounded barrier), then the default process group is destroyed: at exit, and by
    ``Trainer.end()``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=EXIT_BARRIER_TIMEOUT)
        dist.destroy_process_group()
    except Exception as err:  # noqa: BLE001 - a peer gone or a group already destroyed: nothing left to synchronise
        logging.getLogger(__name__).debug("process group left without synchronising at exit: %s", err)
