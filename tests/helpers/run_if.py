"""``run_if``: the marks of a test that needs something this machine may lack, with a skip reason that says what is
missing and how to get it, and the tier marker that goes with it (``gpu`` for anything that needs CUDA).

    @run_if(cuda=True)                      # a function or a class
    def test_on_a_gpu(): ...

    pytestmark = run_if(namespaces=True)    # a whole module
    pytest.param(..., marks=run_if(min_cuda_gpus=2))

Without its requirement a test is skipped, never deselected: the default run reports it with the reason (``-rs``).
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import sys
from typing import TypeVar

import pytest

_T = TypeVar("_T")


class RunIfMarks(list[pytest.MarkDecorator]):
    """The marks ``run_if`` returns: a list (for ``pytestmark`` and ``pytest.param(marks=...)``) that also decorates."""

    def __call__(self, obj: _T) -> _T:
        for mark in reversed(self):
            obj = mark(obj)
        return obj

    @property
    def skips(self) -> bool:
        """Whether the test is skipped here (a requirement is missing)."""
        return any(m.name == "skipif" and m.args[0] for m in self)

    @property
    def reason(self) -> str:
        return next(m.kwargs["reason"] for m in self if m.name == "skipif")


@functools.cache
def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@functools.cache
def _bf16_cuda() -> bool:
    import torch

    return _cuda_devices() > 0 and torch.cuda.is_bf16_supported()


@functools.cache
def namespaces_work() -> bool:
    """Whether ``unshare -rm`` can mount a tmpfs in a private user + mount namespace (nothing of the host touched)."""
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp"],
                           check=False, capture_output=True, timeout=30)
    return probe.returncode == 0


def _module_found(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is missing, or a bad name
        return False


def run_if(*, cuda: bool = False, min_cuda_gpus: int = 0, bf16_cuda: bool = False, namespaces: bool = False,
           module: str | None = None) -> RunIfMarks:
    """The marks of a test that needs what the arguments name.

    Args:
        cuda: A CUDA GPU (adds the ``gpu`` marker).
        min_cuda_gpus: At least this many CUDA GPUs (adds ``gpu`` when above 0).
        bf16_cuda: A CUDA GPU with bf16 support (Ampere or newer; adds ``gpu``).
        namespaces: Linux user + mount namespaces (``unshare -rm``), to mount a small tmpfs without touching the host.
        module: An importable Python module (e.g. ``"deepspeed"``, ``"peft"``).
    """
    needs_gpu = cuda or bf16_cuda or min_cuda_gpus > 0
    missing: list[str] = []
    gpus = _cuda_devices() if needs_gpu else 0
    wanted = max(min_cuda_gpus, 1 if cuda or bf16_cuda else 0)
    if needs_gpu and gpus < wanted:
        missing.append(f"needs {wanted} CUDA GPU{'s' if wanted > 1 else ''}, {gpus} visible here "
                       "(torch.cuda.device_count()): run it on a GPU machine (`python -m pytest -m gpu`, which "
                       "scripts/gpu_checks.sh runs)")
    if bf16_cuda and gpus >= wanted and not _bf16_cuda():
        missing.append("needs a CUDA GPU with bf16 (compute capability 8.0+, Ampere or newer); the visible GPU has not")
    if namespaces and not namespaces_work():
        missing.append("needs Linux user + mount namespaces (`unshare -rm`) to mount a tmpfs without touching the host; "
                       "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or a container "
                       "started without a seccomp profile that blocks unshare)")
    if module is not None and not _module_found(module):
        missing.append(f"needs the Python module `{module}`, not installed here: pip install it (`bash "
                       "scripts/install.sh --dev` installs the test dependencies that install on any machine)")
    reason = "; ".join(missing) or "has everything it needs here"
    marks = RunIfMarks([pytest.mark.skipif(bool(missing), reason=reason)])
    if needs_gpu:
        marks.append(pytest.mark.gpu)
    return marks
