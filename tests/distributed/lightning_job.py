"""The Lightning door in several processes; rank 0 writes ``OUT_DIR/result.json``.

    python tests/distributed/lightning_job.py MODE OUT_DIR DEVICES NUM_NODES PER_DEVICE_BATCH

Modes:
    fsdp2  tiny BERT under FSDP2 (`HFFSDP2Strategy`): two epochs; then a run stopped after epoch 0, saved as a
           sharded checkpoint, and resumed to the end in a new Trainer.
    ddp    the regression model under DDP (``strategy="ddp"``), e.g. two "nodes" of one process each on loopback.

Launch it with torchrun (``--nproc_per_node 2``, or ``--nnodes 2 --node_rank K`` per "node"), or in one process
(DEVICES = NUM_NODES = 1): the tests compare against that single-process run with the same global batch
(PER_DEVICE_BATCH x processes).
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.helpers.tiny import RegressionDataset, RegressionModel

BERT = {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 16, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "num_labels": 2}


def _bert_data(n: int = 32, length: int = 8):
    import datasets

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, BERT["vocab_size"], (n, length), generator=gen)
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * length] * n,
                                       "labels": (ids[:, 0] % 2).tolist()})


def _parts(mode: str, batch: int):
    import lightning as L
    from transformers import BertConfig, BertForSequenceClassification

    from hf_lightning import HFDataModule, HFModule, OptimizerSettings

    L.seed_everything(0)
    if mode == "fsdp2":
        model, data, lr = BertForSequenceClassification(BertConfig(**BERT)), _bert_data(), 1e-3
    else:
        model, data, lr = RegressionModel(), RegressionDataset(64), 0.1
    module = HFModule(model=model, optimization=OptimizerSettings(learning_rate=lr, max_grad_norm=1.0))
    datamodule = HFDataModule(dataset={"train": data}, batch_size=batch, validation_size=0.0, test_size=0.0,
                              collator="default", tokenize=False)
    return module, datamodule


def _strategy(mode: str, devices: int, num_nodes: int):
    from hf_lightning.strategies import HFFSDP2Strategy

    if devices * num_nodes == 1:
        return "auto"
    if mode == "fsdp2":
        return HFFSDP2Strategy(fsdp_config={"state_dict_type": "SHARDED_STATE_DICT"})
    return "ddp"


class _StopAfterFirstEpoch:
    """Ends ``fit`` after epoch 0 while the schedule still spans both epochs (an interrupted run)."""

    def __new__(cls):
        import lightning as L

        class Stop(L.Callback):
            def on_train_epoch_end(self, trainer, pl_module) -> None:
                trainer.should_stop = True

        return Stop()


def _fit(mode: str, devices: int, num_nodes: int, batch: int, out: str, ckpt_path: str | None = None,
         interrupt: bool = False):
    import lightning as L

    module, datamodule = _parts(mode, batch)
    trainer = L.Trainer(accelerator="cpu", devices=devices, num_nodes=num_nodes, max_epochs=2, logger=False,
                        strategy=_strategy(mode, devices, num_nodes),
                        callbacks=[_StopAfterFirstEpoch()] if interrupt else None,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False, num_sanity_val_steps=0, default_root_dir=out)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer, module


def _full_weights(module) -> dict[str, list]:
    """Whole tensors on every rank (FSDP2 parameters are DTensor shards: ``full_tensor`` gathers them)."""
    state = module.model.state_dict()
    full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in state.items()}
    return {k: v.detach().double().flatten().tolist() for k, v in full.items()}


def run(mode: str, out: str, devices: int, num_nodes: int, batch: int, resume: bool = True) -> dict:
    trainer, module = _fit(mode, devices, num_nodes, batch, out)
    result = {"world_size": trainer.world_size, "strategy": type(trainer.strategy).__name__,
              "global_step": trainer.global_step, "weights": _full_weights(module)}
    if mode == "fsdp2" and resume:
        shard_types = sorted({type(p).__name__ for p in module.model.parameters()})
        first, _ = _fit(mode, devices, num_nodes, batch, out, interrupt=True)
        ckpt = os.path.join(out, "one_epoch.ckpt")
        first.save_checkpoint(ckpt)
        resumed, resumed_module = _fit(mode, devices, num_nodes, batch, out, ckpt_path=ckpt)
        result.update(parameter_types=shard_types, checkpoint_is_dir=os.path.isdir(ckpt),
                      checkpoint_files=sorted(os.listdir(ckpt)) if os.path.isdir(ckpt) else [],
                      interrupted_step=first.global_step, resumed_step=resumed.global_step,
                      resumed_weights=_full_weights(resumed_module))
    return result


if __name__ == "__main__":
    mode, out, devices, nodes, batch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    torch.set_num_threads(1)
    data = run(mode, out, devices, nodes, batch)
    if int(os.environ.get("RANK", "0")) == 0:
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(data, f)
