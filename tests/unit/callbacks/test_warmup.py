"""Warmup (hf_lightning/callbacks/warmup.py): a warm-up multiplying any scheduler's lr, resumed exactly, never twice."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch

from hf_lightning import HFDataModule, HFModule, OptimizerSettings
from hf_lightning.callbacks.hf_flow import HFFlow
from hf_lightning.callbacks.warmup import Warmup, warmup_factor
from tests.helpers.tiny import RegressionDataset, RegressionModel
from tests.unit.callbacks.helpers import fit


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
    module = HFModule(model=RegressionModel(), optimization=OptimizerSettings(learning_rate=0.1, **builtin))
    with pytest.raises(ValueError, match="would warm up a second time"):
        fit([Warmup(warmup_steps=2)], module=module, max_steps=2)


def test_warmup_with_a_cli_optimizer_on_hfmodule() -> None:
    module = HFModule(model=RegressionModel(), optimization=OptimizerSettings(warmup_steps=3))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.2)
    module.configure_optimizers = lambda: optimizer  # what LightningCLI --optimizer does (on the instance)
    _trainer, module, flow = fit([Warmup(warmup_steps=4)], module=module, max_steps=6)
    lrs = [r["learning_rate"] for r in flow.state.log_history if "learning_rate" in r]
    assert lrs == pytest.approx([0.2 * 1 / 4, 0.2 * 3 / 4, 0.2])  # steps 2, 4, 6 (0-based 1, 3, 5)
