"""HFFlow's records (hf_lightning/callbacks/flow_records.py) reach the Lightning loggers with the tags of HF's
TensorBoard integration."""

from __future__ import annotations

from typing import Any

import pytest
from lightning.pytorch.loggers import TensorBoardLogger

from hf_lightning.callbacks.hf_flow import HFFlow
from tests.unit.callbacks.helpers import fit


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
