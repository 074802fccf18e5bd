"""HFModule's evaluation (hf_lightning/modules/evaluation.py): prediction_step as transformers.Trainer's."""

from __future__ import annotations

import torch

from tests.unit.modules.helpers import _bert


def test_prediction_step_returns_loss_logits_labels():
    module = _bert()
    module.model.eval()
    inputs = {"input_ids": torch.randint(1, 100, (2, 4)), "labels": torch.tensor([0, 2])}
    loss, logits, labels = module.prediction_step(module.model, inputs, prediction_loss_only=False)
    assert loss.ndim == 0 and logits.shape == (2, 3) and torch.equal(labels, inputs["labels"])
    assert module.prediction_step(module.model, inputs, prediction_loss_only=True)[1:] == (None, None)
