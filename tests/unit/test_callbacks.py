"""GradientMonitor, Warmup, HFThroughputMonitor and HFFlow's logging door (TensorBoard tags, progress bar)."""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from transformers import TrainerCallback, TrainingArguments

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hf_lightning import HFDataModule, HFModule
from hf_lightning.callbacks.grad_monitor import GradientMonitor
from hf_lightning.callbacks.hf_flow import HFFlow, wrap_trainer_callbacks
from hf_lightning.callbacks.throughput import HFThroughputMonitor
from hf_lightning.callbacks.warmup import Warmup, warmup_factor
from tests.helpers.tiny import RegressionDataset, RegressionModel


class MemoryLogger(Logger):
    """Keeps what Lightning loggers receive."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int | None, dict[str, float]]] = []

    name = "memory"
    version = 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.records.append((step, dict(metrics)))


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


def fit(callbacks: list[Any], model: torch.nn.Module | None = None, max_steps: int = 12, logger: Any = False,
        flow: HFFlow | None = None, progress: bool = False, module: L.LightningModule | None = None,
        **trainer_kwargs: Any) -> tuple[L.Trainer, L.LightningModule, HFFlow]:
    """A short HFModule run on HF's regression data with the given callbacks."""
    torch.manual_seed(0)
    module = module or HFModule(model=model or RegressionModel(), learning_rate=0.1, optim="adamw_torch")
    data = HFDataModule(dataset={"train": RegressionDataset(), "validation": RegressionDataset(length=16, seed=1)},
                        batch_size=8, eval_batch_size=16, collator="default", validation_size=0, test_size=0)
    flow = flow or HFFlow(logging_steps=2)
    trainer_kwargs.setdefault("limit_val_batches", 0 if flow.args.eval_strategy == "no" else None)
    trainer = L.Trainer(max_steps=max_steps, callbacks=[flow, *callbacks], logger=logger, enable_checkpointing=False,
                        enable_progress_bar=progress, num_sanity_val_steps=0, use_distributed_sampler=False,
                        enable_model_summary=False, **trainer_kwargs)
    trainer.fit(module, data)
    return trainer, module, flow


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


# ----------------------------------------------------------------------------------------------- GradientMonitor
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


# ----------------------------------------------------------------------------------------------- Warmup
class LinearModule(L.LightningModule):
    """A user-brought optimizer and a per-epoch scheduler (what LightningCLI --optimizer/--lr_scheduler builds)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.lrs: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self.layer(batch["input_x"][:, None]), batch["labels"][:, None].float())

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])  # the lr this step uses

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=1.0)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)}


def _warm_run(warmup: Warmup, max_steps: int = 16, **kwargs: Any) -> tuple[L.Trainer, LinearModule]:
    module = LinearModule()
    trainer, module, _ = fit([warmup], module=module, max_steps=max_steps, **kwargs)
    return trainer, module


@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_warmup_multiplies_the_schedulers_lr(shape: str) -> None:
    _, module = _warm_run(Warmup(warmup_steps=0.25, shape=shape))  # ceil(16 * 0.25) = 4 steps; 8 steps per epoch
    expected = [0.5 ** (step // 8) * warmup_factor(step, 4, shape) for step in range(16)]
    assert module.lrs == pytest.approx(expected)
    assert module.lrs[0] == 0.0 and module.lrs[4:8] == [1.0] * 4 and module.lrs[8:] == [0.5] * 8


def test_warmup_resumes_exactly(tmp_path: Any) -> None:
    _, straight = _warm_run(Warmup(warmup_steps=10), max_steps=16)

    class StopAt(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            if trainer.global_step == 5:
                trainer.should_stop = True

    module = LinearModule()
    trainer, part1, _ = fit([Warmup(warmup_steps=10), StopAt()], module=module, max_steps=16)
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    resumed_module = LinearModule()
    data = HFDataModule(dataset={"train": RegressionDataset()}, batch_size=8, collator="default", validation_size=0,
                        test_size=0)
    resumed = L.Trainer(max_steps=16, callbacks=[HFFlow(logging_steps=2), Warmup(warmup_steps=10)], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, use_distributed_sampler=False,
                        enable_model_summary=False)
    resumed.fit(resumed_module, data, ckpt_path=str(tmp_path / "mid.ckpt"))
    assert part1.lrs + resumed_module.lrs == pytest.approx(straight.lrs)
    assert len(resumed_module.lrs) == 11


@pytest.mark.parametrize("builtin", [{"warmup_steps": 2}, {"lr_scheduler_type": "constant_with_warmup"}])
def test_warmup_refuses_to_warm_twice(builtin: dict[str, Any]) -> None:
    module = HFModule(model=RegressionModel(), learning_rate=0.1, **builtin)
    with pytest.raises(ValueError, match="would warm up a second time"):
        fit([Warmup(warmup_steps=2)], module=module, max_steps=2)


def test_warmup_with_a_cli_optimizer_on_hfmodule() -> None:
    module = HFModule(model=RegressionModel(), warmup_steps=3)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.2)
    module.configure_optimizers = lambda: optimizer  # what LightningCLI --optimizer does (on the instance)
    _trainer, module, flow = fit([Warmup(warmup_steps=4)], module=module, max_steps=6)
    lrs = [r["learning_rate"] for r in flow.state.log_history if "learning_rate" in r]
    assert lrs == pytest.approx([0.2 * 1 / 4, 0.2 * 3 / 4, 0.2])  # steps 2, 4, 6 (0-based 1, 3, 5)


# ----------------------------------------------------------------------------------------------- HFFlow logging door
def test_tensorboard_has_hf_tags(tmp_path: Any) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(str(tmp_path), name="run")
    flow = HFFlow(logging_steps=4, eval_strategy="steps", eval_steps=6)
    fit([], logger=logger, flow=flow, max_steps=12)
    scalars = EventAccumulator(logger.log_dir).Reload()
    tags = set(scalars.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/epoch", "eval/loss",
            "eval/runtime", "train/train_loss"} <= tags
    logged = {r["step"]: r["loss"] for r in flow.state.log_history if "loss" in r}
    assert {e.step: e.value for e in scalars.Scalars("train/loss")} == pytest.approx(logged)
    assert [e.step for e in scalars.Scalars("eval/loss")] == [6, 12]


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_bar_shows_the_loss(enabled: bool) -> None:
    trainer, _module, _ = fit([], progress=enabled, max_steps=3)
    if enabled:
        assert isinstance(trainer.progress_bar_callback, ProgressBar)  # Lightning's TQDM or Rich bar
        assert "loss" in trainer.progress_bar_metrics
    else:
        assert trainer.progress_bar_callback is None


def test_eval_strategy_without_validation_data_is_a_clear_error() -> None:
    flow = HFFlow(eval_strategy="steps", eval_steps=2)
    with pytest.raises(ValueError, match="eval_strategy='steps' .* needs an evaluation set"):
        fit([], flow=flow, max_steps=4, limit_val_batches=0)


def test_wrap_trainer_callbacks_for_a_plain_lightning_trainer() -> None:
    seen: list[str] = []

    class Tutorial(TrainerCallback):
        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seen.append(f"epoch {state.epoch:.0f} step {state.global_step}")

    flow = wrap_trainer_callbacks([Tutorial()], TrainingArguments("unused", logging_steps=3, report_to=[]))
    fit([], flow=flow, max_steps=16)
    assert seen == ["epoch 1 step 8", "epoch 2 step 16"]
    assert [r["step"] for r in flow.state.log_history] == [3, 6, 9, 12, 15, 16]
    with pytest.raises(TypeError, match="TrainerCallback"):
        wrap_trainer_callbacks([TQDMProgressBar()])


def test_throughput_monitor_reads_dict_batches() -> None:
    logger = MemoryLogger()
    fit([HFThroughputMonitor(input_key="input_x", window_size=2)], logger=logger, max_steps=6,
        log_every_n_steps=2)
    keys = set().union(*(metrics for _, metrics in logger.records))
    # Lightning's names (one device: "device/"; several: also the global rates); items are input_x elements.
    assert {"train/device/samples_per_sec", "train/device/items_per_sec", "train/device/batches_per_sec"} <= keys
    assert ("train/samples", 48) in {(k, v) for _, metrics in logger.records for k, v in metrics.items()}
