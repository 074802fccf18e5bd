"""enable_jit_checkpoint: a real SIGTERM to a real training process mid-window leaves a complete checkpoint, the
process exits cleanly, and resuming from it ends with the weights of an uninterrupted run (both doors, and 2-process
DDP where the signal reaches rank 0 only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_lightning.checkpoint import folder
from tests.distributed.conftest import HERE, JOB_TIMEOUT, ROOT, job_env, torchrun

# Each case starts its own training processes (a full run, a signalled run, a resumed run; torchrun for -ddp).
pytestmark = pytest.mark.distributed

SCRIPT = str(HERE / "jit_job.py")


def _run(cmd: list[str], log: Path) -> str:
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=job_env(PYTHONPATH=str(ROOT)), stdout=out, stderr=subprocess.STDOUT,
                              timeout=JOB_TIMEOUT, check=False)
    text = log.read_text()
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:5])}... exited with {proc.returncode}:\n{text[-4000:]}")
    return text


def _job(door: str, out: Path, mode: str, ddp: bool) -> str:
    args = (SCRIPT, door, str(out), mode)
    cmd = torchrun(*args) if ddp else [sys.executable, *args]
    return _run(cmd, out.parent / f"{out.name}-{mode}.log")


@pytest.mark.parametrize("door, ddp", [("facade", False), ("lightning", False), ("facade", True),
                                       ("facade_override", False)],
                         ids=["facade", "lightning-door", "facade-ddp", "facade-save-checkpoint-override"])
def test_sigterm_mid_window_checkpoints_exits_cleanly_and_resumes_exactly(tmp_path, door, ddp):
    full, cut = tmp_path / "full", tmp_path / "cut"
    full.mkdir()
    cut.mkdir()
    _job(door, full, "full", ddp)
    log = _job(door, cut, "signal", ddp)
    assert "FINISHED signal at step 6" in log  # the window in flight finished, then training stopped cleanly
    assert sorted(p.name for p in cut.glob("checkpoint-*")) == ["checkpoint-6"]
    assert folder.is_complete(str(cut / "checkpoint-6"))
    assert (cut / "checkpoint-6" / "marked.txt").exists() == (door == "facade_override")
    log = _job(door, cut, "resume", ddp)
    total = 8 if ddp else 16  # 64 samples, 2 epochs, 2 micro-batches of 4 per step (x 2 ranks with DDP)
    assert f"FINISHED resume at step {total}" in log
    ranks = 2 if ddp else 1
    for rank in range(ranks):
        want = torch.load(full / f"weights-full-{rank}.pt")
        got = torch.load(cut / f"weights-resume-{rank}.pt")
        for name in want:
            assert torch.allclose(got[name], want[name], rtol=0, atol=1e-7), name


def test_sigterm_without_jit_checkpoint_exits_with_sigterms_status(tmp_path):
    """Without ``enable_jit_checkpoint``, a SIGTERM stops training and the process exits with 143 (128 + SIGTERM),
    as a terminated process does, not with 0 (Lightning's bare ``SystemExit``) nor as a Ctrl+C; nothing after
    ``train()`` runs and no checkpoint is written."""
    log = tmp_path / "nojit.log"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, SCRIPT, "facade", str(tmp_path), "nojit"], cwd=ROOT,
                              env=job_env(PYTHONPATH=str(ROOT)), stdout=out, stderr=subprocess.STDOUT,
                              timeout=JOB_TIMEOUT, check=False)
    text = log.read_text()
    assert proc.returncode == 143, text[-3000:]
    assert "FINISHED" not in text and "training stopped after global step 5" in text
    assert not list(tmp_path.glob("checkpoint-*"))


def test_the_cli_exits_with_sigterms_status_when_lightning_stops_the_fit(monkeypatch, capsys):
    """``python -m hf_lightning fit``: Lightning's SIGTERM handling ends the fit with a bare ``SystemExit`` (status 0);
    the CLI turns it into status 143 with a line that names the option that checkpoints first."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from hf_lightning import cli

    def terminated(args):
        raise SIGTERMException

    monkeypatch.setattr(cli, "_cli", terminated)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["fit", "--config", "configs/quickstart.yaml"])
    assert stopped.value.code == 143
    assert "enable_jit_checkpoint" in capsys.readouterr().err
