"""HFFlow (hf_lightning/callbacks/hf_flow.py): a clear error for evaluation without data, and transformers callbacks
on a plain Lightning Trainer."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from lightning.pytorch.callbacks import TQDMProgressBar
from transformers import TrainerCallback, TrainingArguments

from hf_lightning.callbacks.hf_flow import HFFlow, wrap_trainer_callbacks
from tests.unit.callbacks.helpers import fit


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


def test_a_callback_named_by_a_string_is_refused_with_the_yaml_form() -> None:
    """A yaml config listing ``callbacks: [transformers.PrinterCallback]`` hands HFFlow a string: refused when built,
    naming the ``class_path`` form, not an AttributeError at the first event."""
    with pytest.raises(TypeError, match=r"HFFlow\(callbacks=\.\.\.\).*'transformers.PrinterCallback'.*class_path"):
        HFFlow(callbacks=["transformers.PrinterCallback"])
    with pytest.raises(TypeError, match=r"wrap_trainer_callbacks\(callbacks=\.\.\.\)"):
        wrap_trainer_callbacks([TQDMProgressBar()])


def test_report_to_runs_transformers_trackers_in_a_plain_lightning_trainer(tmp_path, monkeypatch) -> None:
    """HFFlow(report_to=["mlflow"]) in the Lightning door reports through transformers' own MLflowCallback (was
    silently ignored): a run in the tracking store with HF's metric names and steps; "tensorboard" there is the
    Lightning trainer's logger, and its absence is warned about."""
    import mlflow
    from mlflow.tracking import MlflowClient

    store = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "lightning-door")
    flow = HFFlow(logging_steps=2, report_to=["mlflow", "tensorboard"], run_name="door")
    pickle.dumps(flow)  # the trackers join in setup, in each process: a spawning strategy can pickle the callback
    with pytest.warns(UserWarning, match=r"report_to names 'tensorboard'.*TensorBoardLogger.*add the logger"):
        fit([], flow=flow, max_steps=4)
    assert [type(c).__name__ for c in flow.handler.callbacks] == ["DefaultFlowCallback", "MLflowCallback"]
    mlflow.end_run()
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("lightning-door").experiment_id])
    assert run.info.run_name == "door"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [2, 4]
    assert [r["loss"] for r in flow.state.log_history if "loss" in r] == pytest.approx(
        [m.value for m in client.get_metric_history(run.info.run_id, "loss")], rel=1e-6)


def test_report_to_all_and_a_given_handler_in_the_lightning_door() -> None:
    """report_to="all" expands to the installed integrations (as transformers' TrainingArguments expands it) rather than
    reaching transformers' lookup as a name; a handler given to HFFlow is held as given."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.trainer_callback import CallbackHandler

    from hf_lightning.facade import _report_names

    assert _report_names(HFFlow(report_to="all").settings) == get_available_reporting_integrations()
    assert _report_names(HFFlow(report_to=["csv", "all"]).settings)[0] == "csv"
    assert isinstance(HFFlow(handler=CallbackHandler([], None, None, None, None)).handler, CallbackHandler)
