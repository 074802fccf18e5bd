"""The five training runs. Same model, data, seed, order, AdamW (fused, HF's decay groups), linear schedule, clip 1.0,
fp32; every run notes step times and step losses through a `Recorder`. Each imports only its own door's libraries.

Each runner returns the recorder, the collator (batch sizes and token counts) and, when the workload evaluates,
``evaluate`` / ``predict`` callables that use the door's own API on the trained model (see `bench.evaluate`).

Spec keys: ``model``, ``steps``, ``batch_size``, ``accumulate``, ``max_length``, ``lr``, ``weight_decay``, ``seed``,
``sampling`` (``random`` / ``group_by_length``), ``eval_samples`` (0: no evaluation), ``eval_batch_size``,
``workdir``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from bench import common, evaluate
from bench.common import CountingCollator, Recorder


def _data(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(tokenizer, tokenised train split, tokenised evaluation examples or None)."""
    tokenizer = common.load_tokenizer()
    train = common.tokenize(common.raw_split("train"), tokenizer, spec["max_length"])
    limit = spec.get("eval_samples", 0)
    val = common.tokenize(common.raw_split("validation", limit), tokenizer, spec["max_length"]) if limit else None
    return tokenizer, train, val


def _loader(ds: Any, spec: dict[str, Any], collator: CountingCollator) -> DataLoader:
    sampler = common.EpochSampler(len(ds), spec["seed"])
    return DataLoader(ds, batch_size=spec["batch_size"], sampler=sampler, collate_fn=collator)


def _hfl_collator(tokenizer: Any) -> Any:
    """hf_lightning's default collator with a tokenizer (both doors), which the benchmark wraps to count tokens."""
    from hf_lightning.data import build_collator

    return build_collator(None, tokenizer)


def linear_schedule(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' linear schedule without warmup (``_get_linear_schedule_with_warmup_lr_lambda``), built with torch
    alone: importing ``transformers.optimization`` imports ``transformers.trainer_utils`` and, where peft is installed,
    peft, which a raw loop or a plain Lightning module does not need."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, float(steps - step) / float(max(1, steps))))


def raw(spec: dict[str, Any]) -> dict[str, Any]:
    """The floor: a hand-written loop doing what transformers.Trainer does, and nothing else."""
    tokenizer, ds, val = _data(spec)
    ds = common.model_input_columns(ds)
    common.seed_all(spec["seed"])
    model = common.build_model(spec["model"])
    model.train()
    steps, accumulate = spec["steps"], spec["accumulate"]
    optimizer = common.adamw(model, spec["lr"], spec["weight_decay"])
    scheduler = linear_schedule(optimizer, steps)
    collator, rec = CountingCollator(tokenizer), Recorder()
    loader = _loader(ds, spec, collator)
    step, micro, epoch = 0, 0, 0
    while step < steps:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            if micro == 0:
                rec.step_begin()
            loss = model(**batch).loss / accumulate
            loss.backward()
            rec.micro(loss.detach())
            micro += 1
            if micro == accumulate:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                rec.step_end()
                step, micro = step + 1, 0
                if step == steps:
                    break
        epoch += 1
    out = {"recorder": rec, "collator": collator}
    if val is not None:
        out.update(evaluate.raw_loop(model, common.model_input_columns(val), tokenizer, spec))
    return out


def _hf_args(cls: type, spec: dict[str, Any], name: str) -> Any:
    return cls(
        output_dir=f"{spec['workdir']}/{name}", max_steps=spec["steps"], per_device_train_batch_size=spec["batch_size"],
        per_device_eval_batch_size=spec.get("eval_batch_size", 8), gradient_accumulation_steps=spec["accumulate"],
        learning_rate=spec["lr"], weight_decay=spec["weight_decay"], max_grad_norm=1.0, lr_scheduler_type="linear",
        warmup_steps=0, seed=spec["seed"], report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=True,
        train_sampling_strategy=spec["sampling"],
    )


def _trainer_door(trainer_cls: type, args_cls: type, spec: dict[str, Any], name: str, rec: Recorder,
                  callback: Any) -> dict[str, Any]:
    """transformers.Trainer or hf_lightning.Trainer, built and used the same way (the import line differs)."""
    import transformers

    tokenizer, ds, val = _data(spec)
    collator = CountingCollator(tokenizer, _hfl_collator(tokenizer) if name == "hfl" else None)
    transformers.set_seed(spec["seed"])
    model = common.build_model(spec["model"])
    trainer = trainer_cls(model=model, args=_hf_args(args_cls, spec, name), train_dataset=ds, eval_dataset=val,
                          processing_class=tokenizer, data_collator=collator, callbacks=[callback],
                          compute_metrics=evaluate.accuracy if val is not None else None)
    callback.trainer = trainer
    if spec["accumulate"] > 1 and name == "hf":
        # BERT's classifier takes **kwargs but ignores num_items_in_batch, so transformers 5.x would neither divide
        # by GA nor normalise by the count (docs/parity.md, difference 1). transformers' own switch makes it compute
        # the same loss as the other runs.
        trainer.loss_is_scaled_for_ga = False
    trainer.train()
    out = {"recorder": rec, "collator": collator}
    if val is not None:
        out.update(evaluate.trainer_api(trainer, val))
    return out


def hf(spec: dict[str, Any]) -> dict[str, Any]:
    """transformers.Trainer with its defaults (a tokenizer given: DataCollatorWithPadding, dynamic padding)."""
    import transformers

    rec = Recorder()

    class Timed(transformers.TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            rec.step_begin()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            rec.step_end()

    class BenchTrainer(transformers.Trainer):
        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
            loss = super().training_step(model, inputs, num_items_in_batch)  # detached, already / GA
            rec.micro(loss)
            return loss

    return _trainer_door(BenchTrainer, transformers.TrainingArguments, spec, "hf", rec, Timed())


def hfl_trainer(spec: dict[str, Any]) -> dict[str, Any]:
    """hf_lightning through the HF-style door: the transformers.Trainer code with the import line changed."""
    import transformers

    import hf_lightning

    rec = Recorder()

    class Timed(transformers.TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            rec.step_begin()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            rec.step_end(self.trainer.module.step_record.loss)  # the window's loss, a device tensor

    return _trainer_door(hf_lightning.Trainer, hf_lightning.TrainingArguments, spec, "hfl", rec, Timed())


#: The same in both Lightning runs: no logger, checkpoint, progress bar, model summary or sanity evaluation.
QUIET = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
         "num_sanity_val_steps": 0, "use_distributed_sampler": False, "accelerator": "cpu", "devices": 1}


def _lightning_timer(rec: Recorder, accumulate: int, from_module: bool) -> Any:
    """A Lightning callback timing steps from the batch hooks; the step loss comes from the module
    (``HFModule.step_record.loss``) or from the micro-batch losses the plain module noted."""
    import lightning as L

    class LightningTimer(L.Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx % accumulate == 0:
                rec.step_begin()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if (batch_idx + 1) % accumulate == 0:
                if from_module:
                    rec.step_end(pl_module.step_record.loss)
                else:
                    rec.step_end(divide=accumulate)

    return LightningTimer()


def pl(spec: dict[str, Any]) -> dict[str, Any]:
    """A plain lightning.Trainer with a minimal LightningModule (the reference for Lightning's own overhead)."""
    import lightning as L

    rec = Recorder()

    class Plain(evaluate.plain_eval_steps()):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = self.model(**batch).loss
            rec.micro(loss.detach())
            return loss

        def configure_optimizers(self) -> Any:
            optimizer = common.adamw(self.model, spec["lr"], spec["weight_decay"])
            scheduler = linear_schedule(optimizer, spec["steps"])
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    tokenizer, ds, val = _data(spec)
    ds = common.model_input_columns(ds)
    collator = CountingCollator(tokenizer)
    common.seed_all(spec["seed"])
    module = Plain(common.build_model(spec["model"]))
    trainer = L.Trainer(max_steps=spec["steps"], accumulate_grad_batches=spec["accumulate"], gradient_clip_val=1.0,
                        callbacks=[_lightning_timer(rec, spec["accumulate"], from_module=False)], **QUIET)
    trainer.fit(module, _loader(ds, spec, collator))
    out = {"recorder": rec, "collator": collator}
    if val is not None:
        loader = DataLoader(common.model_input_columns(val), batch_size=spec["eval_batch_size"],
                            collate_fn=CountingCollator(tokenizer))
        out.update(evaluate.lightning_api(trainer, module, loader))
    return out


def hfl_door(spec: dict[str, Any]) -> dict[str, Any]:
    """hf_lightning through the Lightning door: HFModule + HFDataModule + lightning.Trainer, as the CLI builds them
    (seed_everything, then the classes; the data module loads and tokenises the packaged data itself)."""
    import lightning as L

    from hf_lightning import HFDataModule, HFModule, OptimizerSettings

    tokenizer = common.load_tokenizer()
    collator, rec = CountingCollator(tokenizer, _hfl_collator(tokenizer)), Recorder()
    L.seed_everything(spec["seed"], verbose=False)
    evaluating = bool(spec.get("eval_samples"))
    module = HFModule(**common.door_model_args(spec["model"]), tokenizer=tokenizer,
                      optimization=OptimizerSettings(learning_rate=spec["lr"], weight_decay=spec["weight_decay"],
                                                     max_grad_norm=1.0, warmup_steps=0),
                      metrics=["accuracy"] if evaluating else None)
    # Without an evaluation in the workload, the validation split is cut to 64 examples: HFFlow's stop at max_steps
    # makes Lightning validate once at the end of fit (see docs/benchmarks.md), which would otherwise cost the whole
    # split (a minute for MiniLM here) after the timed steps.
    data = HFDataModule(dataset="movie_reviews", validation_size=common.VALIDATION_SIZE, test_size=common.TEST_SIZE,
                        max_eval_samples=spec.get("eval_samples") or 64, predict_split="validation",
                        tokenizer=tokenizer, max_length=spec["max_length"], batch_size=spec["batch_size"],
                        eval_batch_size=spec.get("eval_batch_size"), seed=spec["seed"],
                        sampling_strategy=spec["sampling"], collator=collator)
    trainer = L.Trainer(max_steps=spec["steps"], accumulate_grad_batches=spec["accumulate"],
                        callbacks=[_lightning_timer(rec, spec["accumulate"], from_module=True)], **QUIET)
    trainer.fit(module, data)
    out = {"recorder": rec, "collator": collator}
    if evaluating:
        out.update(evaluate.door_api(trainer, module, data))
    return out


RUNNERS = {"raw": raw, "hf": hf, "pl": pl, "hfl_trainer": hfl_trainer, "hfl_door": hfl_door}
