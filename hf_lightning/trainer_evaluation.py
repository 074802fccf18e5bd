"""``evaluate`` and ``predict`` of the HF-style `Trainer`: each runs Lightning's validate / predict loop over the
module the Trainer trains (built on demand before any ``train()``), with HF's metric prefix, ``on_evaluate`` /
``on_predict``, the logged record and the memory metrics of the stage. The data module and Lightning Trainer of an
evaluation are kept between calls on the same data set. A mixin of `Trainer`, which provides ``_build_module``,
``_build_datamodule``, ``_lightning_trainer``, ``log`` and the state these methods read.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from transformers.trainer_utils import EvalLoopOutput, PredictionOutput, speed_metrics

from hf_lightning.args import translate
from hf_lightning.facade import FacadeModule
from hf_lightning.lightning_internals import quiet_lightning
from hf_lightning.modules.loading import uncompiled

#: How many (data set, stage) evaluation set-ups a Trainer keeps.
_EVAL_PARTS_KEPT = 8
#: The speed metrics `evaluate` / `predict` add to what ``evaluation_loop`` returns.
_SPEED_KEYS = ("_runtime", "_samples_per_second", "_steps_per_second")


class _PredictionStepEvents(L.Callback):
    """transformers' ``on_prediction_step`` after each batch of ``evaluate()`` / ``predict()`` (its ProgressCallback
    draws the evaluation bar from it); inside ``train()``, HFFlow fires it."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = weakref.proxy(trainer)  # held by the Trainer's own Lightning trainer: no cycle

    def _event(self) -> None:
        owner = self.trainer
        owner.control = owner.callback_handler.on_prediction_step(owner.args, owner.state, owner.control)

    def on_validation_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.trainer.callback_handler.eval_dataloader = trainer.val_dataloaders  # its length sizes the bar

    def on_predict_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.trainer.callback_handler.eval_dataloader = trainer.predict_dataloaders

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._event()

    def on_predict_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._event()


class TrainerEvaluation:
    """transformers.Trainer's ``evaluate`` / ``predict``; mixed into `hf_lightning.Trainer`."""

    model: Any
    module: FacadeModule | None
    args: Any
    eval_dataset: Any
    data_collator: Any
    processing_class: Any
    callback_handler: Any
    state: Any
    control: Any
    translated: Any
    overridden: set[str]

    def _sync_given_args(self) -> None:  # provided by Trainer
        raise NotImplementedError

    def _refresh_arguments(self) -> None:
        """As transformers reads its arguments at each call, changes made to ``args`` since count: translated
        again, and the module built again where its settings changed (the model itself is kept)."""
        self._sync_given_args()
        translated = translate(self.args)
        if translated != self.translated:
            if translated.module != self.translated.module and not self._training_now():
                self.module = None
            self.translated = translated

    def _training_now(self) -> bool:
        trainer = getattr(self, "pl_trainer", None)
        return trainer is not None and trainer.training

    def _evaluation_module(self) -> FacadeModule:
        # (the module's model is compiled with torch_compile: the trainer's is the model underneath)
        if self.module is None or uncompiled(self.module.model) is not self.model:
            self.module = self._build_module()
        else:  # as transformers reads its attributes at each evaluation, also one during training
            self._hand_over_functions(self.module)
        return self.module

    def _loop_trainer(self) -> L.Trainer:
        """The Lightning Trainer that runs `evaluation_loop` over the loaders it is given (built once)."""
        kept = self.__dict__.get("_kept_loop_trainer")
        if kept is None or kept[0] is not self.translated:
            kept = self.__dict__["_kept_loop_trainer"] = (self.translated,
                                                          self._lightning_trainer([_PredictionStepEvents(self)]))
        return kept[1]

    @staticmethod
    @contextlib.contextmanager
    def _loss_only(module: FacadeModule, loss_only: bool | None) -> Iterator[None]:
        """``prediction_loss_only`` as an `evaluation_loop` call gives it (None: the arguments')."""
        if loss_only is None:
            yield
            return
        kept = module.prediction_loss_only, module.loss_only_in_predict
        module.prediction_loss_only, module.loss_only_in_predict = loss_only, True
        try:
            yield
        finally:
            module.prediction_loss_only, module.loss_only_in_predict = kept

    def _evaluation_parts(self, dataset: Any, stage: str, module: FacadeModule,
                          name: str | None = None) -> tuple[Any, L.Trainer]:
        """The data module and Lightning Trainer of an evaluation, kept between calls on the same data set, stage,
        module and arguments (building them costs more than evaluating a small data set: a Lightning Trainer scans
        the installed packages' entry points), one per data set and stage, so that alternating ``evaluate()`` and
        ``predict()`` calls, or a dict of eval sets, re-use theirs too (the `_EVAL_PARTS_KEPT` latest)."""
        key = (stage, id(dataset), name, id(module), id(self.translated), id(self.data_collator),
               id(self.processing_class))
        kept: dict[tuple[Any, ...], tuple[Any, ...]] = self.__dict__.setdefault("_eval_parts", {})
        owners = (dataset, module, self.translated)  # kept alive with the parts, so that their ids stay theirs
        if key in kept and all(a is b for a, b in zip(kept[key][:3], owners)):
            kept[key] = kept.pop(key)  # most recently used last
            return kept[key][3], kept[key][4]
        datamodule = self._build_datamodule({"validation" if stage == "validate" else "test": dataset}, name)
        trainer = self._lightning_trainer([_PredictionStepEvents(self)])
        kept[key] = (*owners, datamodule, trainer)
        while len(kept) > _EVAL_PARTS_KEPT:
            kept.pop(next(iter(kept)))
        return datamodule, trainer

    def _run_eval(self, dataset: Any, prefix: str, ignore_keys: list[str] | None, stage: str,
                  name: str | None = None, dataloader: Any = None, loss_only: bool | None = None,
                  description: str | None = None) -> Any:
        if self.args.fp16_full_eval or self.args.bf16_full_eval:  # as transformers, outside train(): cast first
            self.model.to(torch.float16 if self.args.fp16_full_eval else torch.bfloat16)
        start = time.time()
        self._refresh_arguments()
        module = self._evaluation_module()
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._settings_kept(module, stage))
            module.ignore_keys = ignore_keys
            module.metric_key_prefix[stage] = prefix
            stack.callback(setattr, module, "pass_description", module.pass_description)
            module.pass_description = description  # evaluation_loop's: the header of its log
            if dataloader is None:
                datamodule, trainer = self._evaluation_parts(dataset, stage, module, name)
                data = {"datamodule": datamodule}
            else:  # evaluation_loop: the batches of the loader given, as they come
                trainer, data = self._loop_trainer(), {"dataloaders": dataloader}
            if not self._model_prepared:  # as transformers: an evaluation before any training prepares the model
                self._model_prepared = True
                self.model_preparation_time = round(time.time() - start, 4)
            switch = getattr(self.optimizer, "eval", None)  # a schedule-free optimizer's evaluation weights
            if callable(switch):
                switch()
            passes = module.finished_passes
            stack.enter_context(quiet_lightning())
            stack.enter_context(self._loss_only(module, loss_only))
            if stage == "validate":
                trainer.validate(module, verbose=False, **data)
            else:
                with warnings.catch_warnings():  # predict_step returns None with prediction_loss_only, by design
                    warnings.filterwarnings("ignore", message=r"predict returned None")
                    trainer.predict(module, return_predictions=False, **data)
            if module.finished_passes == passes:  # no batch to evaluate: Lightning skipped the pass
                module.finish_empty_pass(stage)
            if not self._training_now():  # as transformers: the model stays in eval mode (Lightning restores it)
                self.model.eval()
                self._keep_model_on(trainer)
            return module.eval_record.metrics if stage == "validate" else module.prediction_output

    @contextlib.contextmanager
    def _settings_kept(self, module: FacadeModule, stage: str) -> Iterator[None]:
        """An evaluation's prefix and ignored keys last for that call, as transformers passes them down. Inside a
        running ``train()`` (a callback's or an overridden ``evaluate``'s call) the training module also gets back
        what the evaluation's own Lightning run changed: the training's Lightning Trainer, whose hooks
        (``on_before_optimizer_step``: ``on_pre_optimizer_step``, the input tokens seen) reach the callbacks through
        it; the pass it may be in the middle of (a dict of eval sets, one set evaluated); and the device training
        runs on (Lightning's teardown of the evaluation moves the model to the CPU)."""
        kept = module.ignore_keys, module.metric_key_prefix[stage]
        fit = self.pl_trainer if self._fitting() else None
        passing = module._stage, list(module._finished_sets), module.eval_record, module.prediction_output
        try:
            yield
        finally:
            module.ignore_keys, module.metric_key_prefix[stage] = kept
            if fit is not None:
                module._stage, module._finished_sets, module.eval_record, module.prediction_output = passing
                if module._trainer is not fit:
                    module.trainer = fit
                module.to(fit.strategy.root_device)

    def _keep_model_on(self, trainer: L.Trainer) -> None:
        """As transformers, the model stays on the device it ran on between calls (Lightning's teardown moves it to
        the CPU after each run); not where a strategy shards or spreads it, nor with several processes."""
        device = trainer.strategy.root_device
        if device.type != "cpu" and self.model is not None and self.place_model_on_device \
                and trainer.world_size == 1:
            self.model.to(device)

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> EvalLoopOutput:
        """transformers' ``evaluation_loop``, for an overridden ``evaluate`` / ``predict`` to call: each batch of
        ``dataloader``, as it comes, through ``prediction_step`` (Lightning's predict loop, ``on_prediction_step``
        after each); the predictions and labels, ``compute_metrics``' results and the loss, prefixed, and the number
        of samples. No speed metrics, log record or ``on_evaluate`` (``evaluate`` / ``predict`` add them). A subclass
        may override it: ``evaluate`` and ``predict`` (also the evaluations during training) then call the override.

        Args:
            dataloader: The batches (``get_eval_dataloader()`` / ``get_test_dataloader(...)``, or any loader of dicts).
            description: The pass's name in the log header ("Evaluation", "Prediction"), as in transformers.
            prediction_loss_only: The loss only (no predictions, no metrics); None: ``args.prediction_loss_only``.
            ignore_keys: Keys of the model's output dict left out of the predictions.
            metric_key_prefix: The prefix of the metric keys.
        """
        loss_only = self.args.prediction_loss_only if prediction_loss_only is None else prediction_loss_only
        output = self._run_eval(None, metric_key_prefix, ignore_keys, "predict", dataloader=dataloader,
                                loss_only=bool(loss_only), description=description)
        metrics = {k: v for k, v in output.metrics.items()
                   if not (k.startswith(f"{metric_key_prefix}_") and k.endswith(_SPEED_KEYS))}
        return EvalLoopOutput(output.predictions, output.label_ids, metrics, self.module.last_num_samples)

    def _through_evaluation_loop(self, loader: Any, description: str, prefix: str, ignore_keys: list[str] | None,
                                 loss_only: bool | None) -> EvalLoopOutput:
        """transformers' ``evaluate`` / ``predict`` around an overridden `evaluation_loop`: its output, with the
        speed metrics of the whole call (the model's preparation time left out)."""
        start = time.time()
        output = self.evaluation_loop(loader, description=description, prediction_loss_only=loss_only,
                                      ignore_keys=ignore_keys, metric_key_prefix=prefix)
        start += output.metrics.get(f"{prefix}_model_preparation_time", 0.0)
        total_batch_size = self.args.eval_batch_size * self.args.world_size
        output.metrics.update(speed_metrics(prefix, start, num_samples=output.num_samples,
                                            num_steps=math.ceil(output.num_samples / total_batch_size)))
        return output

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """HF's ``evaluate``: metrics with the prefix and speed metrics; logged and passed to ``on_evaluate``."""
        override = eval_dataset is not None
        dataset = eval_dataset if override else self.eval_dataset
        if isinstance(dataset, dict):  # as transformers: each set by name (the trainer's) or itself (one given)
            metrics: dict[str, float] = {}
            for name, ds in dataset.items():
                metrics.update(self.evaluate(ds if override else name, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        name = None
        if isinstance(dataset, str):  # a name of the eval_dataset dict, as transformers' get_eval_dataloader(name)
            if not isinstance(self.eval_dataset, dict) or dataset not in self.eval_dataset:
                raise ValueError(f"evaluate('{dataset}'): the Trainer's eval_dataset is not a dict with that name "
                                 f"(names: {sorted(self.eval_dataset) if isinstance(self.eval_dataset, dict) else []}).")
            name, dataset = dataset, self.eval_dataset[dataset]
        if dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        self._memory_tracker.start_stage("eval")
        if "evaluation_loop" in self.overridden:
            metrics = self._through_evaluation_loop(
                self.get_eval_dataloader(name if name is not None else dataset), "Evaluation", metric_key_prefix,
                ignore_keys, True if self.compute_metrics is None else None).metrics
        else:
            metrics = self._run_eval(dataset, metric_key_prefix, ignore_keys, "validate", name)
        self.log(metrics)  # as in transformers, log() adds "epoch" to the returned dict too
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=metrics)
        self._memory_tracker.stop_stage("eval", metrics)  # after the log, as transformers (returned metrics only)
        return metrics

    def predict(self, test_dataset: Any, ignore_keys: list[str] | None = None,
                metric_key_prefix: str = "test") -> PredictionOutput:
        """HF's ``predict``: predictions (ragged ones padded with -100), label_ids and metrics."""
        self._memory_tracker.start_stage("test")
        if "evaluation_loop" in self.overridden:
            loop = self._through_evaluation_loop(self.get_test_dataloader(test_dataset), "Prediction",
                                                 metric_key_prefix, ignore_keys, None)
            output = PredictionOutput(loop.predictions, loop.label_ids, loop.metrics)
        else:
            output = self._run_eval(test_dataset, metric_key_prefix, ignore_keys, "predict")
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, output.metrics)
        self._memory_tracker.stop_stage("test", output.metrics)  # after on_predict, as transformers
        return output
