"""A full disk during a checkpoint save: a real, small tmpfs as the output folder's file system.

The training runs in a fresh process inside its own mount namespace (``unshare``), where a 4 MiB tmpfs is mounted;
after ``checkpoint-2`` is written a callback fills that file system to the last byte, so the save of step 4 meets a
real ``ENOSPC``. Training must stop with an error that says the disk is full and names the checkpoint to resume from;
``checkpoint-2`` must stay complete, nothing of ``checkpoint-4`` (not even its staging folder) may remain, and resuming
from what was on that disk must end with the weights of an uninterrupted run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from hf_lightning import Trainer, TrainingArguments
from hf_lightning.checkpoint import folder
from tests.helpers.run_if import run_if
from tests.helpers.tiny import RegressionDataset, StrictRegressionModel

ROOT = Path(__file__).resolve().parents[2]

JOB = '''
import os
import sys

from transformers import TrainerCallback

from hf_lightning import Trainer, TrainingArguments
from tests.helpers.tiny import RegressionDataset, StrictRegressionModel


class FillDiskAfter(TrainerCallback):
    """After the save of `step`, writes a file until the file system has no byte left."""

    def __init__(self, step, path):
        self.step, self.path = step, path

    def on_save(self, args, state, control, **kwargs):
        if state.global_step != self.step:
            return
        with open(self.path, "wb", buffering=0) as f:  # unbuffered: nothing is left to flush at close
            try:
                while True:
                    f.write(b"x" * 4096)
            except OSError as err:
                print("DISK FULL", err.errno, flush=True)


output_dir, filler = sys.argv[1], sys.argv[2]
args = TrainingArguments(output_dir, **{ARGS})
trainer = Trainer(model=StrictRegressionModel(), args=args, train_dataset=RegressionDataset(length=32),
                  callbacks=[FillDiskAfter(2, filler)])
trainer.train()
print("FINISHED", flush=True)
'''

ARGS = dict(per_device_train_batch_size=4, num_train_epochs=1, learning_rate=0.05, save_steps=2, logging_steps=1,
            report_to=[], use_cpu=True, disable_tqdm=True, seed=7)


@run_if(namespaces=True)
def test_full_disk_during_a_save_loses_nothing(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB.replace("{ARGS}", repr(ARGS)))
    mount, kept = tmp_path / "disk", tmp_path / "kept"
    mount.mkdir()
    # In the namespace: mount the small disk, train on it (the save of step 4 fails), copy what the disk holds out.
    shell = (f"mount -t tmpfs -o size=4m tmpfs {mount} && {sys.executable} -u {script} {mount}/out {mount}/filler; "
             f"rc=$?; cp -a {mount}/out {kept}; exit $rc")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run(["unshare", "-rm", "sh", "-c", shell], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    out = run.stdout + run.stderr
    assert "DISK FULL 28" in out, out[-3000:]  # errno 28: ENOSPC, the file system really was full
    assert run.returncode != 0 and "FINISHED" not in out, out[-3000:]
    assert "Saving checkpoint-4 failed: the disk holding" in out and "is full" in out, out[-3000:]
    assert "newest: " in out and "checkpoint-2" in out.split("newest: ", 1)[1][:200], out[-3000:]

    # What the disk held: checkpoint-2 complete, nothing of checkpoint-4 (no staging folder resume could trip on).
    assert sorted(os.listdir(kept)) == ["checkpoint-2"]
    assert folder.is_complete(str(kept / "checkpoint-2"))
    assert folder.load_trainer_state(str(kept / "checkpoint-2")).global_step == 2

    # Resuming from that disk's content (on a disk with room) ends where an uninterrupted run ends.
    full = Trainer(model=StrictRegressionModel(), args=TrainingArguments(str(tmp_path / "full"), **ARGS),
                   train_dataset=RegressionDataset(length=32))
    full.train()
    resumed = Trainer(model=StrictRegressionModel(), args=TrainingArguments(str(kept), **ARGS),
                      train_dataset=RegressionDataset(length=32))
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == full.state.global_step == 8
    for name, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=1e-7)
