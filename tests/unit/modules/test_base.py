"""HFModule (hf_lightning/modules/base.py): names checked before training, HF's label smoothing, save_pretrained, the
progress bar, and parameters outside the model that train too."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers
from lightning.pytorch.callbacks.progress import ProgressBar

from hf_lightning import HFModule
from hf_lightning.losses import UncertaintyWeightedLoss
from tests.helpers.tiny import TINY_BERT
from tests.unit.callbacks.helpers import fit
from tests.unit.modules.helpers import _bert


def test_unknown_names_fail_before_training():
    with pytest.raises(ValueError, match="task='nope'"):
        HFModule(model=TINY_BERT, task="nope")
    with pytest.raises(ValueError, match="optim='nope'"):
        _bert(optim="nope").create_optimizer()
    with pytest.raises(ValueError, match="Unknown metric"):
        _bert(metrics=["acuracy"])


def test_label_smoothing_uses_transformers_label_smoother():
    module = _bert(label_smoothing_factor=0.1)
    module.model.eval()
    inputs = {"input_ids": torch.randint(1, 100, (4, 6)), "labels": torch.tensor([0, 2, 1, 1])}
    loss, outputs = module.compute_loss(module.model, dict(inputs), return_outputs=True)
    expected = transformers.trainer_pt_utils.LabelSmoother(0.1)(outputs, inputs["labels"])
    torch.testing.assert_close(loss, expected)


def test_save_pretrained_round_trips(tmp_path):
    module = HFModule(model="minilm", num_labels=2)
    module.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.classifier.weight, module.model.classifier.weight)
    assert transformers.AutoTokenizer.from_pretrained(tmp_path)("a film")["input_ids"][0] == 101


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_bar_shows_the_loss(enabled: bool) -> None:
    trainer, _module, _ = fit([], progress=enabled, max_steps=3)
    if enabled:
        assert isinstance(trainer.progress_bar_callback, ProgressBar)  # Lightning's TQDM or Rich bar
        assert "loss" in trainer.progress_bar_metrics
    else:
        assert trainer.progress_bar_callback is None


def test_hfmodule_trains_a_learned_weighting_held_outside_the_model(tmp_path) -> None:
    """An HFModule subclass combining two losses with UncertaintyWeightedLoss: its log_vars reach the optimizer (one
    extra group, no weight decay), move during fit, and are in the Lightning checkpoint; the model's groups stay HF's."""
    import lightning as L

    from hf_lightning import HFDataModule, HFModule
    from tests.helpers.tiny import RegressionDataset, RegressionModel

    class TwoLosses(HFModule):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.weighting = UncertaintyWeightedLoss(["mse", "l1"])

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(input_x=inputs["input_x"])
            pred = outputs[0]
            loss = self.weighting({"mse": F.mse_loss(pred, inputs["labels"]), "l1": F.l1_loss(pred, inputs["labels"])})
            return (loss, outputs) if return_outputs else loss

    torch.manual_seed(0)
    module = TwoLosses(model=RegressionModel(), learning_rate=0.05, weight_decay=0.1, optim="adamw_torch")
    data = HFDataModule(dataset={"train": RegressionDataset()}, batch_size=8, collator="default", validation_size=0,
                        test_size=0)
    trainer = L.Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
                        limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, data)
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 3 and groups[2]["params"] == [module.weighting.log_vars]
    assert groups[2]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 0.1
    assert not torch.equal(module.weighting.log_vars.detach(), torch.zeros(2))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]["weighting.log_vars"]
    torch.testing.assert_close(saved, module.weighting.log_vars.detach())
