"""What the callback tests share: a logger that keeps what it receives and a short HFModule run with given callbacks."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hf_lightning import HFDataModule, HFModule, OptimizerSettings
from hf_lightning.callbacks.hf_flow import HFFlow
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


def fit(callbacks: list[Any], model: torch.nn.Module | None = None, max_steps: int = 12, logger: Any = False,
        flow: HFFlow | None = None, progress: bool = False, module: L.LightningModule | None = None,
        **trainer_kwargs: Any) -> tuple[L.Trainer, L.LightningModule, HFFlow]:
    """A short HFModule run on HF's regression data with the given callbacks."""
    torch.manual_seed(0)
    module = module or HFModule(model=model or RegressionModel(),
                                optimization=OptimizerSettings(learning_rate=0.1, optim="adamw_torch"))
    data = HFDataModule(dataset={"train": RegressionDataset(), "validation": RegressionDataset(length=16, seed=1)},
                        batch_size=8, eval_batch_size=16, collator="default", validation_size=0, test_size=0)
    flow = flow or HFFlow(logging_steps=2)
    trainer_kwargs.setdefault("limit_val_batches", 0 if flow.args.eval_strategy == "no" else None)
    trainer = L.Trainer(max_steps=max_steps, callbacks=[flow, *callbacks], logger=logger, enable_checkpointing=False,
                        enable_progress_bar=progress, num_sanity_val_steps=0, use_distributed_sampler=False,
                        enable_model_summary=False, **trainer_kwargs)
    trainer.fit(module, data)
    return trainer, module, flow
