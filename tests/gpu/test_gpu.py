"""On a CUDA GPU (skipped elsewhere, with the reason): bf16 parity with transformers.Trainer, no host synchronisation
between logging steps, compiled (whole model and regional) and Liger-patched training within bf16 tolerance of the
eager run. The models and data are those of scripts/bench_gpu.py --quick (a 2-layer Llama, learnable sequences).

    python -m pytest -q -m gpu          # on a GPU machine
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import transformers

import hf_lightning
from tests.helpers.run_if import run_if

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_gpu import QUICK, Synthetic, build_model

pytestmark = [*run_if(bf16_cuda=True), pytest.mark.timeout(600)]
CASE = replace(QUICK["llama-300m"], steps=12, log_every=4)


def _train(lib, tmp_path, name: str, callbacks=(), **extra) -> list[float]:
    transformers.set_seed(0)
    args = lib.TrainingArguments(str(tmp_path / name), per_device_train_batch_size=CASE.batch, max_steps=CASE.steps,
                                 learning_rate=CASE.lr, logging_steps=CASE.log_every, save_strategy="no",
                                 report_to=[], disable_tqdm=True, seed=0, bf16=True, **extra)
    trainer = lib.Trainer(model=build_model(CASE), args=args, train_dataset=Synthetic(CASE, CASE.batch * CASE.steps),
                          data_collator=transformers.default_data_collator, callbacks=list(callbacks))
    trainer.train()
    return [r["loss"] for r in trainer.state.log_history if "loss" in r]


def test_bf16_training_logs_transformers_losses(tmp_path):
    ours = _train(hf_lightning, tmp_path, "hfl")
    theirs = _train(transformers, tmp_path, "hf")
    assert len(ours) == len(theirs) == CASE.steps // CASE.log_every
    assert ours == pytest.approx(theirs, rel=2e-2)


class _SyncWatch(transformers.TrainerCallback):
    """CUDA's sync debug mode ("warn") on every step that writes no log record (the first step excepted: the
    loss-scaling probe reads its two losses once)."""

    def on_step_begin(self, args, state, control, **kwargs):
        step = state.global_step + 1
        if step > 1 and step % args.logging_steps != 0:
            torch.cuda.set_sync_debug_mode("warn")

    def on_step_end(self, args, state, control, **kwargs):
        torch.cuda.set_sync_debug_mode("default")


def test_no_host_synchronisation_between_logging_steps(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(hf_lightning, tmp_path, "sync", callbacks=[_SyncWatch()], dataloader_pin_memory=True)
    torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchronizing" in str(w.message)]
    assert not syncs, syncs[:5]


@pytest.mark.parametrize("scope", ["model", "blocks"])
def test_compiled_training_stays_within_bf16_tolerance(tmp_path, scope):
    eager = _train(hf_lightning, tmp_path, "eager")
    compiled = _train(hf_lightning, tmp_path, scope, torch_compile=True, torch_compile_scope=scope)
    assert compiled == pytest.approx(eager, rel=3e-2)


@run_if(module="liger_kernel")
def test_liger_kernels_stay_within_bf16_tolerance(tmp_path):
    plain = _train(hf_lightning, tmp_path, "plain")
    patched = _train(hf_lightning, tmp_path, "liger", use_liger_kernel=True)
    assert patched == pytest.approx(plain, rel=3e-2)


def test_the_model_stays_on_the_gpu_as_in_transformers(tmp_path):
    """transformers keeps the model on the GPU after train() / evaluate() / predict(); Lightning's teardown moves a
    module to the CPU after each run, also after an evaluation a callback runs inside train(), which would leave the
    training step with its weights on the CPU: hf_lightning puts the model back where it ran."""
    from tests.helpers.tiny import RegressionDataset, RegressionModel

    class EvaluateAtStepTwo(transformers.TrainerCallback):
        trainer = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                self.trainer.evaluate()

    callback = EvaluateAtStepTwo()
    args = hf_lightning.TrainingArguments(str(tmp_path), report_to=[], disable_tqdm=True, save_strategy="no",
                                          per_device_train_batch_size=8, max_steps=4, learning_rate=0.1)
    trainer = hf_lightning.Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(),
                                   eval_dataset=RegressionDataset(16, seed=1), callbacks=[callback])
    callback.trainer = trainer
    trainer.train()
    assert trainer.state.global_step == 4
    assert trainer.model.a.device.type == "cuda"
    trainer.evaluate()
    trainer.predict(RegressionDataset(8, seed=2))
    assert trainer.model.a.device.type == "cuda"
