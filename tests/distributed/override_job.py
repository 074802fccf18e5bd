"""A Trainer subclass whose ``evaluate`` adds a metric that chooses the best checkpoint, under torchrun: each
evaluation during training runs the override (a standalone evaluation inside the running fit, on every rank). Its
``get_batch_samples`` records the count its super() gives each window (the labels of every rank's batches).

    python -m torch.distributed.run --nproc_per_node 2 ... tests/distributed/override_job.py OUT_DIR PER_DEVICE_BATCH

Rank 0 writes ``result.json`` (the log records without timings, the best checkpoint, a final ``evaluate()``). The
test also calls `run` in its own process with twice the per-device batch (the same global batch).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.helpers.tiny import RegressionDataset, RegressionModel


def _timeless(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.endswith(("_runtime", "_per_second"))}


def run(out_dir: str, per_device_batch: int) -> dict:
    import torch
    import transformers

    import hf_lightning

    class BestByOverride(hf_lightning.Trainer):
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            metrics[f"{metric_key_prefix}_custom"] = -float(self.state.global_step)  # best: the first evaluation
            # what evaluation loops written for transformers use: sizes that differ by rank padded, then gathered
            rank = self.accelerator.process_index
            ragged = self.accelerator.pad_across_processes(torch.full((rank + 1, 2), float(rank)), pad_index=-1)
            self.gathered = {"tensors": self.gather_function(ragged).tolist(),
                             "objects": self.gather_function([f"rank {rank}"])}
            return metrics

        def get_batch_samples(self, epoch_iterator, num_batches, device):
            batches, count = super().get_batch_samples(epoch_iterator, num_batches, device)
            self.counts = [*getattr(self, "counts", []), float(count)]
            return batches, count

    def mae(pred) -> dict[str, float]:
        return {"mae": float(np.abs(pred.predictions - pred.label_ids).mean()), "count": float(len(pred.label_ids))}

    args = hf_lightning.TrainingArguments(
        out_dir, report_to=[], use_cpu=True, disable_tqdm=True, per_device_train_batch_size=per_device_batch,
        per_device_eval_batch_size=3, max_steps=6, eval_strategy="steps", eval_steps=2, save_steps=2, logging_steps=2,
        load_best_model_at_end=True, metric_for_best_model="custom", greater_is_better=True, learning_rate=0.1)
    transformers.set_seed(42)
    trainer = BestByOverride(model=RegressionModel(), args=args, train_dataset=RegressionDataset(48),
                             eval_dataset=RegressionDataset(10, seed=1), compute_metrics=mae)
    trainer.train()
    final = trainer.evaluate()
    result = {"records": [_timeless(r) for r in trainer.state.log_history], "final": _timeless(final),
              "best": os.path.basename(trainer.state.best_model_checkpoint), "counts": trainer.counts,
              "gathered": trainer.gathered}
    if trainer.is_world_process_zero():
        with open(os.path.join(out_dir, "result.json"), "w") as f:
            json.dump(result, f)
    return result


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]))
