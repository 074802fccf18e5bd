"""The HF-style door under torchrun: train, evaluate, predict, checkpoint and resume; rank 0 writes the results.

    python -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port P \
        tests/distributed/facade_job.py OUT_DIR PER_DEVICE_BATCH [fsdp | resume CHECKPOINT]

With ``fsdp`` a tiny BERT trains with ``TrainingArguments(fsdp="full_shard auto_wrap")`` (FSDP2) and is evaluated on
7 samples (4 + 3 on two ranks: ranks run different numbers of batches).

or as two one-process "nodes" under srun's environment (``SLURM_PROCID``, ``SLURM_NNODES``, ...). The tests also
call `run` in their own process (one rank, twice the per-device batch: the same global batch).
"""

from __future__ import annotations

import json
import os
import pickle
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.helpers.tiny import RegressionDataset, RegressionModel

TRAIN_SAMPLES = 60  # 60 / (8 per global batch): a short last batch, split 2 + 2 across two ranks
EVAL_SAMPLES = 5  # two ranks: 3 + 2 samples, nothing padded
ACCUMULATION = 3  # windows of 3, 3, 2 micro-batches per epoch: a short last window
SAVE_STEPS = 2  # checkpoint-2 lies inside the first epoch (3 steps per epoch)


class SumRegression(RegressionModel):
    """The regression model with a loss summed over samples and divided by ``num_items_in_batch`` when given, so the
    label count of the whole accumulation window, over all ranks, decides the gradient (transformers' path)."""

    def forward(self, input_x: torch.Tensor, labels: torch.Tensor | None = None,
                num_items_in_batch: torch.Tensor | None = None, **kwargs) -> tuple:
        y = input_x * self.a + self.b
        if labels is None:
            return (y,)
        squared = (y - labels.to(y.dtype)) ** 2
        loss = squared.sum() / num_items_in_batch if num_items_in_batch is not None else squared.mean()
        return (loss, y)


def compute_metrics(pred) -> dict[str, float]:
    predictions, labels = np.asarray(pred.predictions), np.asarray(pred.label_ids)
    return {"count": float(len(labels)), "mse": float(np.mean((predictions - labels) ** 2))}


def _args(out_dir: str, per_device_batch: int, **extra):
    from hf_lightning import TrainingArguments

    return TrainingArguments(
        out_dir, per_device_train_batch_size=per_device_batch, per_device_eval_batch_size=2,
        gradient_accumulation_steps=ACCUMULATION, num_train_epochs=2, learning_rate=0.1, logging_steps=1,
        report_to=[], use_cpu=True, disable_tqdm=True, seed=42, **extra)


def _trainer(args):
    import transformers

    import hf_lightning

    transformers.set_seed(args.seed)
    return hf_lightning.Trainer(model=SumRegression(), args=args, train_dataset=RegressionDataset(TRAIN_SAMPLES),
                                compute_metrics=compute_metrics)


def _weights(trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.model.state_dict().items()}


def gather_inputs(rank: int) -> dict:
    """What each rank holds for the `gather_across_ranks` checks: 3 rows on rank 0, 2 shorter rows on rank 1."""
    rows, width = (3, 7) if rank == 0 else (2, 5)
    return {
        "ragged": np.arange(rows * width, dtype=np.float32).reshape(rows, width) + 100 * rank,
        "nested": (np.full(rows, rank, dtype=np.float64), {"ids": np.ones((rows, width), dtype=np.int64) * rank}),
        "mask": np.array([True, False, True]) if rank == 0 else np.array([False, True]),
        "rank0_only": np.arange(3) if rank == 0 else None,
        "rank1_only": np.arange(2) + 10 if rank == 1 else None,
        "nobody": None,
    }


def gather_checks(trainer) -> dict:
    """`gather_across_ranks` through the module and strategy the Trainer used (every rank must call it)."""
    from hf_lightning.modules.gather import gather_across_ranks, gather_objects_across_ranks

    rank = trainer.pl_trainer.global_rank
    tensors = {name: gather_across_ranks(trainer.module, value) for name, value in gather_inputs(rank).items()}
    objects = {name: gather_objects_across_ranks(value) for name, value in gather_inputs(rank).items()}
    return {**tensors, "objects": objects}


def run(out_dir: str, per_device_batch: int) -> dict:
    """Trains with checkpoints, evaluates and predicts 5 samples, then resumes from checkpoint-2 in a new Trainer."""
    args = _args(os.path.join(out_dir, "full"), per_device_batch, save_strategy="steps", save_steps=SAVE_STEPS)
    trainer = _trainer(args)
    # asked for before train(), as a script sizing its schedule does: this process's batches, as transformers'
    train_batches = len(trainer.get_train_dataloader())
    output = trainer.train()
    evaluation = RegressionDataset(EVAL_SAMPLES, seed=7)
    metrics = trainer.evaluate(evaluation)
    prediction = trainer.predict(evaluation)
    result = {
        "world_size": trainer.pl_trainer.world_size, "num_nodes": trainer.pl_trainer.num_nodes,
        "strategy": type(trainer.pl_trainer.strategy).__name__,
        "cluster": type(getattr(trainer.pl_trainer.strategy, "cluster_environment", None)).__name__,
        "weights": _weights(trainer), "global_step": output.global_step, "train_loss": output.training_loss,
        "max_steps": trainer.state.max_steps,
        "losses": [r["loss"] for r in trainer.state.log_history if "loss" in r],
        "eval": {k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second"))},
        "predictions": np.asarray(prediction.predictions).tolist(),
        "label_ids": np.asarray(prediction.label_ids).tolist(), "test_count": prediction.metrics["test_count"],
        "rng_files": sorted(f for f in os.listdir(os.path.join(args.output_dir, f"checkpoint-{SAVE_STEPS}"))
                            if f.startswith("rng_state")),
        "train_batches": train_batches, "distributed_type": trainer.accelerator.distributed_type.value,
    }
    if trainer.pl_trainer.world_size == 2:
        result["gather"] = gather_checks(trainer)
    resumed = _trainer(_args(os.path.join(out_dir, "resumed"), per_device_batch))
    resumed.train(resume_from_checkpoint=os.path.join(args.output_dir, f"checkpoint-{SAVE_STEPS}"))
    result["resumed_weights"] = _weights(resumed)
    result["resumed_step"] = resumed.state.global_step
    group = torch.distributed.is_available() and torch.distributed.is_initialized
    result["group_before_end"] = bool(group and group())
    resumed.end()  # transformers' last call of a script: the process group ends
    result["group_after_end"] = bool(group and group())
    return result


def resume(out_dir: str, per_device_batch: int, checkpoint: str) -> dict:
    """Resumes from a checkpoint another number of processes wrote (same global batch) and trains to the end."""
    trainer = _trainer(_args(out_dir, per_device_batch))
    output = trainer.train(resume_from_checkpoint=checkpoint)
    return {"weights": _weights(trainer), "global_step": output.global_step,
            "world_size": trainer.pl_trainer.world_size}


def run_fsdp(out_dir: str, per_device_batch: int, fsdp: bool) -> dict:
    """Tiny BERT through the HF-style Trainer, with FSDP2 when ``fsdp``; checkpoint, evaluate and predict 7 samples."""
    import transformers
    from transformers import BertConfig, BertForSequenceClassification

    import hf_lightning
    from tests.distributed.lightning_job import BERT, _bert_data

    args = hf_lightning.TrainingArguments(
        out_dir, per_device_train_batch_size=per_device_batch, per_device_eval_batch_size=3, num_train_epochs=1,
        learning_rate=1e-3, report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="steps", save_steps=4,
        logging_steps=1, **({"fsdp": "full_shard auto_wrap"} if fsdp else {}))
    transformers.set_seed(0)
    data = _bert_data()
    trainer = hf_lightning.Trainer(model=BertForSequenceClassification(BertConfig(**BERT)), args=args,
                                   train_dataset=data, compute_metrics=_accuracy)
    output = trainer.train()
    metrics = trainer.evaluate(data.select(range(7)))
    prediction = trainer.predict(data.select(range(7)))
    trainer.save_model(os.path.join(out_dir, "final"))  # every rank, as in a transformers script
    exported = {}
    if trainer.is_world_process_zero():
        reloaded = BertForSequenceClassification.from_pretrained(os.path.join(out_dir, "final"))
        exported = {k: float(v.double().sum()) for k, v in reloaded.state_dict().items()}
    return {"strategy": type(trainer.pl_trainer.strategy).__name__, "train_loss": output.training_loss,
            "exported": exported,
            "eval": {k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second"))},
            "predictions": np.asarray(prediction.predictions).tolist(),
            "checkpoint_files": sorted(os.listdir(os.path.join(out_dir, "checkpoint-4")))}


def _accuracy(pred) -> dict[str, float]:
    hits = np.argmax(pred.predictions, -1) == pred.label_ids
    return {"count": float(len(pred.label_ids)), "accuracy": float(hits.mean())}


if __name__ == "__main__":
    out, batch = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    if sys.argv[3:4] == ["resume"]:
        data = resume(out, batch, sys.argv[4])
    else:
        data = run_fsdp(out, batch, True) if sys.argv[3:] == ["fsdp"] else run(out, batch)
    if int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0:
        if "gather" in data:
            with open(os.path.join(out, "gather.pkl"), "wb") as f:
                pickle.dump(data.pop("gather"), f)
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(data, f)
