"""Crash safety: a real training process is SIGKILLed during a step and during a save, then resumed.

The training script below runs in fresh Python processes (``sys.executable``). It can pause inside a given optimizer
step (gradients computed, optimizer not yet stepped) or inside the save of a given step (weights, optimizer, scheduler
and RNG files already in the staging folder, ``trainer_state.json`` not yet written); the test kills it there with
SIGKILL. After each kill every ``checkpoint-*`` folder must be complete and loadable, the half-written staging folder
must be ignored, and the final weights of the resumed run must equal those of an uninterrupted run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_lightning.checkpoint import folder
from tests.helpers.tiny import RegressionDataset, StrictRegressionModel

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = '''
"""Regression training with HFCheckpoint (see tests/integration/test_crash_resume.py)."""
import argparse
import time

import lightning as L
from safetensors.torch import save_file
from transformers import TrainingArguments, set_seed

from hf_lightning import HFDataModule, HFModule, OptimizerSettings
from hf_lightning.callbacks.checkpoint import HFCheckpoint
from hf_lightning.callbacks.hf_flow import HFFlow
from hf_lightning.checkpoint import folder
from tests.helpers.tiny import RegressionDataset, StrictRegressionModel


def pause(where):
    print("PAUSED", where, flush=True)
    time.sleep(600)


class PauseInStep(L.Callback):
    def __init__(self, step):
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step + 1 == self.step:
            pause(f"step {self.step}")


def pause_in_save(step):
    write_state = folder.save_trainer_state

    def slow(state, staging):
        if state.global_step == step:
            pause(f"save {step}")
        write_state(state, staging)

    folder.save_trainer_state = slow


def train(output_dir, resume=False, pause_step=None, pause_save=None):
    args = TrainingArguments(output_dir, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                             num_train_epochs=2, learning_rate=0.05, logging_steps=1, save_steps=3,
                             save_total_limit=3, report_to=[], use_cpu=True, disable_tqdm=True)
    set_seed(args.seed)
    module = HFModule(model=StrictRegressionModel(), optimization=OptimizerSettings(learning_rate=args.learning_rate))
    data = HFDataModule(dataset={"train": RegressionDataset(length=64)}, batch_size=2, collator="default",
                        validation_size=0, test_size=0)
    callbacks = [HFFlow(args=args), HFCheckpoint(resume_from_checkpoint=resume or None)]
    if pause_step:
        callbacks.append(PauseInStep(pause_step))
    if pause_save:
        pause_in_save(pause_save)
    trainer = L.Trainer(max_epochs=2, accumulate_grad_batches=2, callbacks=callbacks, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        use_distributed_sampler=False, default_root_dir=output_dir)
    trainer.fit(module, data)
    return module


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--result")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pause-step", type=int)
    parser.add_argument("--pause-save", type=int)
    cli = parser.parse_args()
    trained = train(cli.output_dir, cli.resume, cli.pause_step, cli.pause_save)
    save_file({k: v.contiguous() for k, v in trained.model.state_dict().items()}, cli.result)
    print("DONE", flush=True)
'''


def _start(script: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-u", str(script), *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _kill_when_paused(proc: subprocess.Popen) -> str:
    """Reads the child's output until it reports a pause, then SIGKILLs it (no clean-up code can run)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("PAUSED"):
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            return line.strip()
    proc.wait(timeout=60)
    raise AssertionError("the training process ended without pausing:\n" + "".join(seen[-40:]))


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "DONE" in out, out[-4000:]


def _assert_intact(output_dir: Path) -> list[int]:
    """Every checkpoint-* folder is complete and loads safely; returns their steps."""
    steps = []
    for path in sorted(output_dir.glob("checkpoint-*")):
        state = json.loads((path / "trainer_state.json").read_text())
        assert path.name == f"checkpoint-{state['global_step']}"
        assert set(load_file(path / "model.safetensors")) == {"a", "b"}
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            folder.load_torch(str(path / name))
        steps.append(state["global_step"])
    return sorted(steps)


def _history(output_dir: Path, step: int) -> list[dict]:
    state = json.loads((output_dir / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return [{k: v for k, v in r.items() if not k.endswith(("_runtime", "_per_second"))} for r in state["log_history"]]


@pytest.mark.timeout(600)
def test_sigkill_during_step_and_save_then_resume(tmp_path: Path) -> None:
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    out, result = tmp_path / "run", tmp_path / "final.safetensors"
    procs: list[subprocess.Popen] = []
    try:
        # 1. killed inside optimizer step 11 (epoch 0 has 16 steps): checkpoints 3, 6, 9 are on disk
        procs.append(_start(script, str(out), "--result", str(result), "--pause-step", "11"))
        assert _kill_when_paused(procs[-1]) == "PAUSED step 11"
        assert _assert_intact(out) == [3, 6, 9]

        # 2. resumed from checkpoint-9, killed while writing checkpoint-21 (inside epoch 1)
        procs.append(_start(script, str(out), "--result", str(result), "--resume", "--pause-save", "21"))
        assert _kill_when_paused(procs[-1]) == "PAUSED save 21"
        assert _assert_intact(out) == [12, 15, 18]  # save_total_limit=3 rotated 3, 6, 9 away
        staging = out / ".tmp-checkpoint-21"
        assert (staging / "model.safetensors").is_file() and not (staging / "trainer_state.json").exists()
        assert folder.resolve_checkpoint(str(out), True) == str(out / "checkpoint-18")

        # 3. resumed from checkpoint-18 (the staging folder is ignored, then cleaned) to the end
        procs.append(_start(script, str(out), "--result", str(result), "--resume"))
        _finish(procs[-1])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert not staging.exists()
    assert _assert_intact(out) == [27, 30, 32]

    spec = importlib.util.spec_from_file_location("crash_train_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reference = module.train(str(tmp_path / "reference"))
    resumed = load_file(result)
    for name, tensor in reference.model.state_dict().items():
        assert torch.allclose(resumed[name], tensor, rtol=0, atol=1e-7), (name, resumed[name], tensor)
    assert _history(out, 32) == _history(tmp_path / "reference", 32)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "trainer_state.json", "scheduler.pt"])
def test_a_damaged_file_in_the_resumed_checkpoint_is_named_before_any_training(tmp_path, name):
    """A truncated file (what a full disk or a broken copy leaves) in the checkpoint being resumed: an error naming
    the file and the previous checkpoint, before any step; the checkpoints on disk stay as they were."""
    from hf_lightning import Trainer, TrainingArguments

    steps = []

    class Steps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps.append(state.global_step)

    def trainer():
        args = TrainingArguments(str(tmp_path), per_device_train_batch_size=8, num_train_epochs=1, save_steps=4,
                                 report_to=[], use_cpu=True, disable_tqdm=True)
        return Trainer(model=StrictRegressionModel(), args=args, train_dataset=RegressionDataset(),
                       callbacks=[Steps()])

    trainer().train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    path = tmp_path / "checkpoint-8" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    resumed, steps[:] = trainer(), []
    with pytest.raises(ValueError, match=rf"checkpoint-8/{re.escape(name)} is damaged .*previous checkpoint, "
                                         rf".*checkpoint-4"):
        resumed.train(resume_from_checkpoint=True)
    assert steps == []  # no step ran
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_compiled_model_checkpoints_and_resumes_without_the_compile_wrapper(tmp_path):
    """torch_compile: checkpoint weights carry the model's own keys (no ``_orig_mod.``), load with the model class,
    and a resume from one ends where the uninterrupted compiled run ends (the ``eager`` backend keeps it fast)."""
    from safetensors.torch import load_file

    from hf_lightning import Trainer, TrainingArguments

    def run(out, resume=None):
        args = TrainingArguments(str(out), per_device_train_batch_size=8, num_train_epochs=1, save_steps=4,
                                 learning_rate=0.1, torch_compile=True, torch_compile_backend="eager", report_to=[],
                                 use_cpu=True, disable_tqdm=True)
        torch.manual_seed(0)
        trainer = Trainer(model=StrictRegressionModel(), args=args, train_dataset=RegressionDataset())
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run(tmp_path / "full")
    assert sorted(load_file(tmp_path / "full" / "checkpoint-4" / "model.safetensors")) == ["a", "b"]
    assert type(full.model) is StrictRegressionModel  # trainer.model is the model, as transformers keeps it
    resumed = run(tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoint-4"))
    assert resumed.state.global_step == full.state.global_step == 8
    for name in ("a", "b"):
        assert torch.allclose(getattr(resumed.model, name), getattr(full.model, name), rtol=0, atol=1e-7)
