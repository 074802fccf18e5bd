"""Evaluation and prediction through each door's own API, on the model the run just trained, and their timing.

``evaluate`` gives the sample-weighted loss and the accuracy, ``predict`` the logits. `measure` calls each
``repeats`` times: the first call of a door may set things up (the Lightning door tokenises its predict split then),
so the throughput is the median of the later calls and the first call is reported on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from bench import common
from bench.common import CountingCollator


def accuracy(pred: Any) -> dict[str, float]:
    """The ``compute_metrics`` given to both Trainer classes."""
    return {"accuracy": float((np.asarray(pred.predictions).argmax(-1) == pred.label_ids).mean())}


def raw_loop(model: torch.nn.Module, ds: Any, tokenizer: Any, spec: dict[str, Any]) -> dict[str, Callable]:
    """The floor: no-grad loops accumulating the loss (sample-weighted), the accuracy and the logits."""
    loader = DataLoader(ds, batch_size=spec["eval_batch_size"], collate_fn=CountingCollator(tokenizer))

    def run_evaluate() -> dict[str, float]:
        model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for batch in loader:
                out = model(**batch)
                n = batch["labels"].shape[0]
                loss_sum += float(out.loss) * n
                correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
                count += n
        return {"eval_loss": loss_sum / count, "eval_accuracy": correct / count}

    def run_predict() -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return torch.cat([model(**batch).logits for batch in loader]).numpy()

    return {"evaluate": run_evaluate, "predict": run_predict, "eval_dataset": ds}


def trainer_api(trainer: Any, ds: Any) -> dict[str, Any]:
    """``Trainer.evaluate()`` (compute_metrics: `accuracy`) and ``Trainer.predict(ds).predictions``."""
    return {"evaluate": trainer.evaluate, "predict": lambda: trainer.predict(ds).predictions, "eval_dataset": ds}


def plain_eval_steps() -> type:
    """A LightningModule base with the plain evaluation steps: the loss logged with its batch size (Lightning then
    weights the epoch mean by it) and a torchmetrics accuracy; predict_step returns the logits."""
    import lightning as L
    from torchmetrics.classification import MulticlassAccuracy

    class PlainEval(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.accuracy = MulticlassAccuracy(num_classes=2, average="micro")

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            out = self.model(**batch)
            self.accuracy.update(out.logits.argmax(-1), batch["labels"])
            self.log("eval_loss", out.loss, batch_size=batch["labels"].shape[0])
            self.log("eval_accuracy", self.accuracy)

        def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.model(**batch).logits

    return PlainEval


def lightning_api(trainer: Any, module: Any, loader: DataLoader) -> dict[str, Any]:
    """``lightning.Trainer.validate`` / ``predict`` of the plain module."""
    return {"evaluate": lambda: trainer.validate(module, loader, verbose=False)[0],
            "predict": lambda: torch.cat(trainer.predict(module, loader)).numpy(), "eval_dataset": loader.dataset}


def door_api(trainer: Any, module: Any, data: Any) -> dict[str, Any]:
    """``lightning.Trainer.validate`` / ``predict`` with the HFModule (metrics=[accuracy]) and its HFDataModule."""
    def run_evaluate() -> dict[str, float]:
        trainer.validate(module, datamodule=data, verbose=False)
        return module.eval_results

    return {"evaluate": run_evaluate, "predict": lambda: torch.cat(trainer.predict(module, datamodule=data)).numpy(),
            "eval_dataset": data.split("validation")}


def _timed(repeats: int, fn: Callable[[], Any]) -> tuple[list[float], list[float], Any]:
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        common.GATE.pause()  # each call runs in its own turn (lockstep with the round's other runs)
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu, out


def measure(spec: dict[str, Any], api: dict[str, Any]) -> dict[str, Any]:
    """Times ``repeats`` evaluate calls, then ``repeats`` predict calls; returns times, metrics and logits."""
    eval_wall, eval_cpu, metrics = _timed(spec["repeats"], api["evaluate"])
    predict_wall, predict_cpu, logits = _timed(spec["repeats"], api["predict"])
    ds = api["eval_dataset"]
    return {"eval_wall": eval_wall, "eval_cpu": eval_cpu, "predict_wall": predict_wall, "predict_cpu": predict_cpu,
            "eval_samples": len(ds), "eval_tokens": int(sum(len(ids) for ids in ds["input_ids"])),
            "eval_loss": float(metrics["eval_loss"]), "eval_accuracy": float(metrics["eval_accuracy"]),
            "logits": np.asarray(logits, dtype=np.float64).round(6).tolist()}
