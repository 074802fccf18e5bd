"""A training process that SIGTERMs itself mid-window (tests/distributed/test_jit_checkpoint.py).

    python tests/distributed/jit_job.py DOOR OUT_DIR MODE      (DOOR: facade | facade_override | lightning; MODE: full | signal | resume | nojit)

``signal``: at the first micro-batch of optimizer step 6 (of 16; 2 micro-batches per step) the process sends itself
SIGTERM (under torchrun: rank 0 only). ``resume``: resumes from the newest checkpoint in OUT_DIR. ``nojit``: the signal without
``enable_jit_checkpoint`` (the process ends with SIGTERM's status, 143). Every mode ends by
writing the final weights to OUT_DIR/weights-<mode>-<rank>.pt and printing "FINISHED".
"""

import os
import signal
import sys

import lightning as L
import torch
import transformers

import hf_lightning
from hf_lightning import HFDataModule, HFModule, OptimizerSettings
from hf_lightning.callbacks.checkpoint import HFCheckpoint
from hf_lightning.callbacks.hf_flow import HFFlow
from tests.helpers.tiny import RegressionDataset, StrictRegressionModel

SIGNAL_STEP = 6


class SigtermAt(transformers.TrainerCallback):
    """Sends SIGTERM to this process inside an accumulation window (rank 0 only)."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == SIGNAL_STEP and int(os.environ.get("RANK", "0")) == 0:
            os.kill(os.getpid(), signal.SIGTERM)


class MarkingTrainer(hf_lightning.Trainer):
    """A ``_save_checkpoint`` override (door ``facade_override``): the JIT checkpoint goes through it, as in
    transformers, and it marks the folder ``super()`` wrote."""

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        with open(os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}", "marked.txt"), "w") as f:
            f.write("saved through _save_checkpoint")


def main(door: str, out: str, mode: str) -> None:
    args = hf_lightning.TrainingArguments(
        out, per_device_train_batch_size=4, gradient_accumulation_steps=2, num_train_epochs=2, learning_rate=0.1,
        logging_steps=1, save_strategy="steps", save_steps=100, report_to=[], use_cpu=True, disable_tqdm=True,
        enable_jit_checkpoint=mode != "nojit", max_grad_norm=1.0)
    resume = mode == "resume" or None
    callbacks = [SigtermAt()] if mode in ("signal", "nojit") else []
    transformers.set_seed(42)
    model = StrictRegressionModel()
    if door in ("facade", "facade_override"):
        cls = MarkingTrainer if door == "facade_override" else hf_lightning.Trainer
        trainer = cls(model=model, args=args, train_dataset=RegressionDataset(), callbacks=callbacks)
        trainer.train(resume_from_checkpoint=resume)
        rank, step = int(os.environ.get("RANK", "0")), trainer.state.global_step
    else:
        module = HFModule(model=model, optimization=OptimizerSettings(learning_rate=args.learning_rate))
        data = HFDataModule(dataset={"train": RegressionDataset()}, batch_size=4, collator="default",
                            validation_size=0, test_size=0)
        flow = HFFlow(args=args, callbacks=callbacks)
        pl = L.Trainer(max_epochs=2, accumulate_grad_batches=2, logger=False, enable_progress_bar=False,
                       enable_model_summary=False, callbacks=[flow, HFCheckpoint(args=args, resume_from_checkpoint=resume)])
        pl.fit(module, data)
        rank, step = pl.global_rank, flow.state.global_step
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
               os.path.join(out, f"weights-{mode}-{rank}.pt"))
    print(f"FINISHED {mode} at step {step}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
