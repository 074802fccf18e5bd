"""A stream (iterable data set) trained, evaluated and predicted on under torchrun by transformers.Trainer or
hf_lightning's Trainer: which samples each process trains on, and what comes back.

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed/stream_job.py OUT_DIR LIB KIND

LIB: ``transformers`` or ``hf_lightning``; KIND: ``torch`` (a torch IterableDataset, with a length: ``sized``) or
``datasets`` (a ``datasets.IterableDataset``). Each process writes ``seen_<rank>.json`` (the ``input_x`` of every
training batch); the first also ``result.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

import datasets
import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.helpers.tiny import IterableRegression, StrictRegressionModel

TRAIN, EVAL, BATCH = 50, 13, 4  # 6 global batches of 8, then 2 samples: one per process


class SizedStream(IterableRegression):
    def __len__(self) -> int:
        return len(self.data)


def stream(kind: str, length: int) -> torch.utils.data.IterableDataset:
    if kind == "datasets":
        source = IterableRegression(length)
        return datasets.IterableDataset.from_generator(
            lambda: ({"input_x": float(row["input_x"]), "labels": float(row["labels"])} for row in source))
    return (SizedStream if kind == "sized" else IterableRegression)(length)


def main(out: str, library: str, kind: str) -> None:
    lib = importlib.import_module(library)
    transformers.set_seed(0)
    model = StrictRegressionModel()
    seen: list[list[float]] = []
    model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append([round(float(x), 6) for x in kwargs["input_x"]]) if m.training else None,
        with_kwargs=True)
    length = {"num_train_epochs": 1} if kind == "sized" else {"max_steps": 8}
    args = lib.TrainingArguments(
        out, per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH, learning_rate=0.1, logging_steps=1,
        report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", **length)
    trainer = lib.Trainer(model=model, args=args, train_dataset=stream(kind, TRAIN), eval_dataset=stream(kind, EVAL))
    trainer.train()
    metrics = trainer.evaluate()
    prediction = trainer.predict(stream(kind, EVAL))
    trainer.args.eval_use_gather_object = True  # gathered as Python objects: put back in the same order
    as_objects = trainer.predict(stream(kind, EVAL)) if library == "hf_lightning" else prediction
    rank = int(os.environ.get("RANK", "0"))
    with open(os.path.join(out, f"seen_{rank}.json"), "w") as f:
        json.dump(seen, f)
    if rank == 0:
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({
                "weights": [float(model.a), float(model.b)], "global_step": trainer.state.global_step,
                "epoch": trainer.state.epoch, "losses": [r["loss"] for r in trainer.state.log_history if "loss" in r],
                "eval_keys": list(metrics), "eval_loss": metrics["eval_loss"],
                "predictions": np.asarray(prediction.predictions).tolist(),
                "label_ids": np.asarray(prediction.label_ids).tolist(),
                "object_predictions": np.asarray(as_objects.predictions).tolist(),
                "object_label_ids": np.asarray(as_objects.label_ids).tolist()}, f)
    if library == "transformers":  # its end() destroys the group without the ranks meeting: a gloo rank leaving
        torch.distributed.barrier()  # while its peer still tears down can abort (hf_lightning's end() meets first)
    trainer.end()  # a script's last call


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:4])
