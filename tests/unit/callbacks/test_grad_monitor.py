"""GradientMonitor (hf_lightning/callbacks/grad_monitor.py): HF's grad norm per layer, histograms, the non-finite
policies (skip the step, warn, stop) and spike warnings."""

from __future__ import annotations

import copy
import math
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from hf_lightning.callbacks.grad_monitor import GradientMonitor
from tests.helpers.tiny import RegressionModel
from tests.unit.callbacks.helpers import MemoryLogger, fit


class PoisonedRegression(RegressionModel):
    """Returns a NaN loss (or a scaled one) on chosen optimizer steps (counted by the forward of training mode)."""

    def __init__(self, nan_at: int | None = None, scale_at: int | None = None, ga: int = 1) -> None:
        super().__init__()
        self.nan_at, self.scale_at, self.ga, self.calls = nan_at, scale_at, ga, 0

    def forward(self, input_x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple:
        loss, y = super().forward(input_x, labels)
        if self.training and labels is not None:
            self.calls += 1
            step = (self.calls - 1) // self.ga + 1
            if step == self.nan_at:
                loss = loss * float("nan")
            if step == self.scale_at:
                loss = loss * 1e4
        return loss, y


class Snapshot(L.Callback):
    """Copies the weights and the optimizer's per-parameter state before and after optimizer step ``step``.

    (The param groups' lr is left out: the scheduler still advances on a skipped step, as documented.)
    """

    def __init__(self, step: int) -> None:
        self.step, self.before, self.after = step, None, None

    def _copy(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple:
        return (copy.deepcopy(pl_module.state_dict()), copy.deepcopy(trainer.optimizers[0].state_dict()["state"]))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if trainer.global_step == self.step - 1:
            self.before = self._copy(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.step:
            self.after = self._copy(trainer, pl_module)


def _assert_nested_equal(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_nested_equal(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        for x, y in zip(a, b, strict=True):
            _assert_nested_equal(x, y)
    elif torch.is_tensor(a):
        assert torch.equal(a, b), (a, b)
    else:
        assert a == b


def test_total_and_per_layer_norms_are_hf_grad_norm() -> None:
    logger = MemoryLogger()
    monitor = GradientMonitor(layer_depth=2)
    _trainer, module, flow = fit([monitor], logger=logger, max_steps=6)
    last = flow.state.log_history[-2]  # the step-6 record (the final one is the train summary)
    assert last["step"] == 6
    assert monitor.last_norms["total"] == pytest.approx(last["grad_norm"], rel=1e-6)
    assert monitor.last_norms["total"] == pytest.approx(float(module.step_record.grad_norm), rel=1e-6)
    per_layer = math.hypot(monitor.last_norms["model.a"], monitor.last_norms["model.b"])
    assert per_layer == pytest.approx(monitor.last_norms["total"], rel=1e-5)
    steps = [step for step, metrics in logger.records if "grad_norm/total" in metrics]
    assert steps == [2, 4, 6]  # HFFlow's logging_steps=2


def test_histograms_in_tensorboard(tmp_path: Any) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(str(tmp_path), name="run")
    fit([GradientMonitor(log_every_n_steps=3, layer_depth=2, histograms=True)], logger=logger, max_steps=6)
    events = EventAccumulator(logger.log_dir, size_guidance={"histograms": 0}).Reload()
    assert {"grad/model.a", "grad/model.b"} <= set(events.Tags()["histograms"])
    assert [e.step for e in events.Histograms("grad/model.a")] == [3, 6]


@pytest.mark.parametrize("ga", [1, 2])
def test_skip_step_leaves_weights_and_optimizer_state_untouched(ga: int) -> None:
    monitor, snap = GradientMonitor(on_nonfinite="skip_step"), Snapshot(step=3)
    with pytest.warns(UserWarning, match=r"Step 3: non-finite values .* model\.a, model\.b\. .*skip_step"):
        trainer, module, _flow = fit([monitor, snap], model=PoisonedRegression(nan_at=3, ga=ga),
                                    accumulate_grad_batches=ga)
    assert monitor.skipped_steps == [3]
    _assert_nested_equal(snap.before, snap.after)  # weights, exp_avg, exp_avg_sq and Adam's step count
    assert snap.after[1][0]["step"] == 2  # two real steps taken, the third skipped
    assert trainer.global_step == 12 and all(torch.isfinite(p).all() for p in module.parameters())


def test_warn_policy_lets_the_nan_through() -> None:
    with pytest.warns(UserWarning, match="Step 3"):
        _, module, _ = fit([GradientMonitor(on_nonfinite="warn")], model=PoisonedRegression(nan_at=3), max_steps=4)
    assert not all(torch.isfinite(p).all() for p in module.parameters())


def test_stop_policy_stops_after_that_step_with_last_good_weights() -> None:
    monitor, snap = GradientMonitor(on_nonfinite="stop"), Snapshot(step=5)
    with pytest.warns(UserWarning, match="training stops"):
        trainer, _module, flow = fit([monitor, snap], model=PoisonedRegression(nan_at=5))
    assert trainer.global_step == 5 and flow.state.global_step == 5
    _assert_nested_equal(snap.before, snap.after)
    assert "train_loss" in flow.state.log_history[-1]  # HF's end of training still ran


def test_spike_warning_and_resume_state() -> None:
    monitor = GradientMonitor(spike_factor=10, spike_window=20, spike_min_history=5)
    with pytest.warns(UserWarning, match=r"Step 9: gradient norm .* more than 10 x the median"):
        fit([monitor], model=PoisonedRegression(scale_at=9), max_steps=10)
    assert monitor.spike_steps == [9]
    restored = GradientMonitor(spike_window=20)
    restored.load_state_dict(monitor.state_dict())
    assert list(restored._history) == list(monitor._history) and restored.spike_steps == [9]


def test_monitor_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError, match="on_nonfinite='skip'"):
        GradientMonitor(on_nonfinite="skip")  # type: ignore[arg-type]
