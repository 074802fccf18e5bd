"""TrainerCallback parity: transformers.Trainer and lightning.Trainer + HFModule + HFFlow, side by side.

The same recorder `TrainerCallback` (event, global_step, epoch, control flags, kwargs received, log/metric keys) runs
in both, with the same TrainingArguments, model init, seed and data; the event streams, log_history (runtimes
excepted) and final weights must agree.
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
import pytest
import torch
from transformers import (
    AutoTokenizer,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hf_lightning import HFDataModule, HFModule, OptimizerSettings
from hf_lightning.callbacks.hf_flow import HFFlow
from tests.helpers.tiny import RegressionDataset, RegressionModel

EVENTS = [name for name in vars(TrainerCallback) if name.startswith("on_")]
FLAGS = ("should_training_stop", "should_epoch_stop", "should_save", "should_evaluate", "should_log")
SPEED = ("_runtime", "_per_second")


class StrictRegression(RegressionModel):
    """HF's regression model without ``**kwargs``: HF then divides the loss by the window size (as HFModule does)."""

    main_input_name = "input_x"

    def forward(self, input_x: torch.Tensor, labels: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> tuple:
        return super().forward(input_x, labels)


class MaskedRegressionDataset(RegressionDataset):
    """Adds a 0/1 ``attention_mask`` per sample, for ``include_num_input_tokens_seen="non_padding"``."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**super().__getitem__(i), "attention_mask": torch.tensor([1, 1, i % 2, i % 3 == 0], dtype=torch.long)}


class Recorder(TrainerCallback):
    """Appends (event, global_step, epoch, control flags, kwargs given, record keys) for every event."""

    def __init__(self) -> None:
        self.events: list[tuple] = []


def _recording(name: str) -> Any:
    def hook(self: Recorder, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        given = tuple(sorted(k for k, v in kwargs.items() if v is not None))
        # HF hands callbacks accelerate's AcceleratedOptimizer: compare the optimizer inside it.
        inner = {k: getattr(kwargs[k], "optimizer", kwargs[k]) if k == "optimizer" else kwargs[k]
                 for k in ("model", "optimizer", "lr_scheduler") if kwargs.get(k) is not None}
        types = tuple(type(v).__name__ for v in inner.values())
        record = kwargs.get("logs") or kwargs.get("metrics")
        epoch = None if state.epoch is None else round(state.epoch, 6)
        self.events.append((name, state.global_step, epoch, tuple(getattr(control, f) for f in FLAGS), given, types,
                            tuple(sorted(record)) if record else None))
    return hook


for _name in EVENTS:
    setattr(Recorder, _name, _recording(_name))


class StopAt(TrainerCallback):
    """Asks to stop at the end of step ``step`` (honoured at the end of that step)."""

    def __init__(self, step: int = 5) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            control.should_training_stop = True


class ForceLogAndEval(TrainerCallback):
    """Requests a log and an evaluation at step 3 (off HF's schedule)."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 3:
            control.should_log = True
            control.should_evaluate = True


class LossThresholdStop(TrainerCallback):
    """A tutorial-style custom callback: stop once a logged training loss is below a threshold."""

    def __init__(self, threshold: float = 5.0) -> None:
        self.threshold = threshold
        self.seen: list[float] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.seen.append(logs["loss"])
            if logs["loss"] < self.threshold:
                control.should_training_stop = True


def _args(out: str, cfg: dict[str, Any]) -> TrainingArguments:
    base = {"per_device_train_batch_size": 8, "num_train_epochs": 3, "learning_rate": 0.1, "report_to": [],
            "use_cpu": True, "save_strategy": "no", "disable_tqdm": True, "per_device_eval_batch_size": 16,
            "logging_steps": 5}
    base.update(cfg)
    return TrainingArguments(out, **base)


def run_pair(tmp_path: Any, cfg: dict[str, Any], n: int = 64, extra: tuple = (), dataset: type = RegressionDataset,
             processing_class: Any = None) -> tuple[Trainer, Recorder, HFFlow, Recorder, HFModule]:
    """Trains HF and hf_lightning on the same set-up; returns both trainers/flows and their recorders."""
    train, evaluation = dataset(length=n), dataset(length=20, seed=1)
    set_seed(42)
    hf_rec = Recorder()
    hf = Trainer(model=StrictRegression(), args=_args(str(tmp_path / "hf"), cfg), train_dataset=train,
                 eval_dataset=evaluation, callbacks=[hf_rec, *[factory() for factory in extra]],
                 processing_class=processing_class, data_collator=default_data_collator)
    hf.train()
    set_seed(42)
    args = _args(str(tmp_path / "hfl"), cfg)
    hfl_rec = Recorder()
    module = HFModule(model=StrictRegression(), optimization=OptimizerSettings(learning_rate=args.learning_rate),
                      tokenizer=processing_class)
    data = HFDataModule(dataset={"train": train, "validation": evaluation}, batch_size=args.per_device_train_batch_size,
                        eval_batch_size=16, collator="default", validation_size=0, test_size=0)
    flow = HFFlow(args=args, callbacks=[hfl_rec, *[factory() for factory in extra]], control_validation=True)
    trainer = L.Trainer(max_epochs=math.ceil(args.num_train_epochs), max_steps=args.max_steps,
                        accumulate_grad_batches=args.gradient_accumulation_steps, callbacks=[flow], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        use_distributed_sampler=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, data)
    return hf, hf_rec, flow, hfl_rec, module


def assert_same_logs(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> None:
    assert len(expected) == len(got), (expected, got)
    for want, have in zip(expected, got):
        assert set(want) == set(have), (want, have)
        for key, value in want.items():
            if not key.endswith(SPEED):
                assert have[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (key, want, have)


def assert_parity(hf: Trainer, hf_rec: Recorder, flow: HFFlow, hfl_rec: Recorder, module: HFModule) -> None:
    assert hfl_rec.events == hf_rec.events
    assert_same_logs(hf.state.log_history, flow.state.log_history)
    assert flow.state.global_step == hf.state.global_step
    assert flow.state.num_input_tokens_seen == hf.state.num_input_tokens_seen
    for name, param in hf.model.named_parameters():
        torch.testing.assert_close(module.model.get_parameter(name), param, rtol=1e-6, atol=1e-6)


CONFIGS = {
    "default": {},
    "logging_steps_2": {"logging_steps": 2},
    "logging_first_step": {"logging_steps": 10, "logging_first_step": True},
    "eval_steps": {"eval_strategy": "steps", "eval_steps": 4, "logging_steps": 4},
    "eval_epoch": {"eval_strategy": "epoch", "logging_strategy": "epoch"},
    "eval_on_start": {"eval_strategy": "epoch", "eval_on_start": True},
    "ga2_short_window": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "logging_steps": 1},
    "max_steps_mid_epoch": {"max_steps": 11, "eval_strategy": "steps", "eval_steps": 5, "logging_steps": 3},
    "tokens_all": {"include_num_input_tokens_seen": "all", "logging_steps": 3, "eval_strategy": "epoch"},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_events_logs_and_weights(tmp_path: Any, name: str) -> None:
    n = 36 if name == "ga2_short_window" else 64  # 9 micro-batches of 4: windows of 2, 2, 2, 2 and 1
    assert_parity(*run_pair(tmp_path, CONFIGS[name], n=n))


def test_processing_class_is_passed_to_callbacks(tmp_path: Any) -> None:
    from hf_lightning.data.builtin import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    hf, hf_rec, flow, hfl_rec, module = run_pair(tmp_path, {"eval_strategy": "epoch"}, processing_class=tokenizer)
    assert_parity(hf, hf_rec, flow, hfl_rec, module)
    assert all("processing_class" in event[4] for event in hfl_rec.events)


def test_non_padding_tokens(tmp_path: Any) -> None:
    cfg = {"include_num_input_tokens_seen": "non_padding", "logging_steps": 4}
    hf, hf_rec, flow, hfl_rec, module = run_pair(tmp_path, cfg, dataset=MaskedRegressionDataset)
    assert_parity(hf, hf_rec, flow, hfl_rec, module)
    assert 0 < flow.state.num_input_tokens_seen < 4 * 64 * 3  # padding was not counted


@pytest.mark.parametrize("callback", [StopAt, ForceLogAndEval, LossThresholdStop], ids=lambda c: c.__name__)
def test_control_set_by_a_callback(tmp_path: Any, callback: type) -> None:
    cfg = {"eval_strategy": "epoch", "logging_steps": 2}
    hf, hf_rec, flow, hfl_rec, module = run_pair(tmp_path, cfg, extra=(callback,))
    assert_parity(hf, hf_rec, flow, hfl_rec, module)
    if callback is StopAt:
        assert flow.state.global_step == 5
    if callback is LossThresholdStop:
        assert flow.state.global_step < 24
    if callback is ForceLogAndEval:
        assert any(r["step"] == 3 and "eval_loss" in r for r in flow.state.log_history)


def test_printer_callback_runs_unchanged(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    hf, hf_rec, flow, hfl_rec, module = run_pair(tmp_path, {"logging_steps": 8}, extra=(PrinterCallback,))
    assert_parity(hf, hf_rec, flow, hfl_rec, module)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{'loss'")]
    # HF (disable_tqdm) adds a PrinterCallback of its own: each of its 3 records is printed twice, then HFFlow's 3.
    assert len(printed) == 9 and printed[6:] == printed[0:6:2] == printed[1:6:2]


def test_save_steps_events(tmp_path: Any) -> None:
    from hf_lightning.callbacks import checkpoint

    cfg = {"save_strategy": "steps", "save_steps": 8, "eval_strategy": "steps", "eval_steps": 8, "logging_steps": 4}
    train, evaluation = RegressionDataset(), RegressionDataset(length=20, seed=1)
    set_seed(42)
    hf_rec = Recorder()
    hf = Trainer(model=StrictRegression(), args=_args(str(tmp_path / "hf"), cfg), train_dataset=train,
                 eval_dataset=evaluation, callbacks=[hf_rec])
    hf.train()
    set_seed(42)
    args = _args(str(tmp_path / "hfl"), cfg)
    hfl_rec = Recorder()
    module = HFModule(model=StrictRegression(), optimization=OptimizerSettings(learning_rate=args.learning_rate))
    data = HFDataModule(dataset={"train": train, "validation": evaluation}, batch_size=8, eval_batch_size=16,
                        collator="default", validation_size=0, test_size=0)
    flow = HFFlow(args=args, callbacks=[hfl_rec], control_validation=True)
    trainer = L.Trainer(max_epochs=3, callbacks=[flow, checkpoint.HFCheckpoint(args=args)], logger=False,
                        enable_progress_bar=False, num_sanity_val_steps=0,
                        use_distributed_sampler=False, enable_model_summary=False)
    trainer.fit(module, data)
    assert [e for e in hfl_rec.events if e[0] == "on_save"] == [e for e in hf_rec.events if e[0] == "on_save"]
    folders = sorted(p.name for p in (tmp_path / "hfl").glob("checkpoint-*"))
    expected = ["checkpoint-16", "checkpoint-24", "checkpoint-8"]
    assert folders == sorted(p.name for p in (tmp_path / "hf").glob("checkpoint-*")) == expected
    assert hfl_rec.events == hf_rec.events
