"""Evaluation and prediction with HF's ``prediction_step`` and ``evaluation_loop`` semantics.

- ``eval_loss`` is the mean over samples (each batch's mean loss weighted by its size), reduced across ranks.
- torchmetrics (``model.metrics``) accumulate on the device; an HF ``compute_metrics(EvalPrediction)`` gets the
  concatenated predictions, ragged ones padded with -100 (``transformers.trainer_pt_utils.nested_concat``).
- keys carry the prefix (``eval_``, ``test_``), plus ``*_runtime`` / ``*_samples_per_second`` / ``*_steps_per_second``.
- with several processes each rank evaluates a contiguous block of the data set (no padded duplicates); predictions,
  labels, inputs and losses are gathered across ranks in rank order (`gather_across_ranks`), so metrics see every
  sample exactly once and predictions come back in data set order. Under strategies whose forward gathers sharded
  parameters (FSDP, FSDP2, DeepSpeed ZeRO-3) a rank with fewer batches runs extra forwards (outputs unused) after its
  last batch, so every rank joins as many collectives.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from transformers import EvalPrediction
from transformers.trainer_pt_utils import EvalLoopContainer, nested_detach
from transformers.trainer_utils import PredictionOutput, denumpify_detensorize, has_length, speed_metrics
from transformers.utils import logging as hf_logging

from hf_lightning.data.samplers import DispatchedShard, interleave
from hf_lightning.metrics import MetricBuffer, build_metrics
from hf_lightning.modules.autocast import forward_only_autocast
from hf_lightning.modules.gather import gather_across_ranks, gather_objects_across_ranks
from hf_lightning.modules.records import EvalRecord

log = hf_logging.get_logger("transformers.trainer")  # transformers.Trainer's logger: log_level applies


def import_callable(obj: Callable[..., Any] | str | None) -> Callable[..., Any] | None:
    """Resolves ``"package.module.function"`` to the function (callables pass through)."""
    if obj is None or callable(obj):
        return obj
    module_name, _, attr = obj.rpartition(".")
    if not module_name:
        raise ValueError(f"'{obj}' is not an import path: write it as 'package.module.function'.")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"Cannot import '{obj}': {err}. Check the module path and function name.") from err


def _source_dataset(loader: Any) -> Any:
    """The data set a loader reads: the whole stream where the loader reads one process's share of it."""
    dataset = getattr(loader, "dataset", None)
    return dataset.dataset if isinstance(dataset, DispatchedShard) else dataset


def _loader_batch_size(loader: Any) -> int | None:
    """The batch size of an evaluation loader (Lightning wraps the batch sampler of a prediction loader)."""
    return getattr(loader, "batch_size", None) or getattr(getattr(loader, "batch_sampler", None), "batch_size", None)


def _batch_size(inputs: dict[str, Any]) -> int:
    for value in inputs.values():
        if torch.is_tensor(value) and value.dim() > 0:
            return value.shape[0]
    return 1


def _batch_plan(loader: Any) -> tuple[int, int] | None:
    """(batch size, samples of the pass) of a loader that cuts a sampler of known length into batches of one size
    (Lightning's wrapper of a prediction loader's batch sampler keeps both), else None."""
    batches = getattr(loader, "batch_sampler", None)
    size, sampler = getattr(batches, "batch_size", None), getattr(batches, "sampler", None)
    if not isinstance(size, int) or size < 1 or sampler is None or not has_length(sampler):
        return None
    return size, len(sampler)


class _StageState:
    """Accumulators of one evaluation pass over one data set (one dataloader of the stage)."""

    def __init__(self, dataloader_idx: int = 0, concat: bool = True) -> None:
        self.dataloader_idx = dataloader_idx
        self.loss_sum: torch.Tensor | None = None
        #: with ``nan_inf_filter``: the loss summed over, and the samples of, the batches whose loss is finite
        self.finite_loss: torch.Tensor | None = None
        self.num_samples = 0
        self.num_steps = 0
        # transformers' containers: batches concatenated on the device (or kept as a list without
        # eval_do_concat_batches), moved to the host every eval_accumulation_steps and at the end
        self.outputs = {name: EvalLoopContainer(concat, padding_index=-100)
                        for name in ("preds", "labels", "inputs", "losses")}
        self.preds: Any = None  # the host arrays, once the pass is over (`to_host`)
        self.labels: Any = None
        self.inputs: Any = None
        self.losses: Any = None
        self.metric_buffer: MetricBuffer | None = None  # the torchmetrics collection's inputs, fed in blocks
        #: ``batch_eval_metrics``: the last ``compute_metrics`` result, and a batch not scored yet (unknown length)
        self.batch_results: Any = None
        self.pending_batch: EvalPrediction | None = None
        self.start = time.time()
        # Sharded parameters are gathered in every forward: a rank with fewer batches adds forwards (outputs unused)
        # after its last batch so that every rank runs as many (`extra_forwards` of them, after `batches` batches).
        self.batches = 0
        self.extra_forwards = 0
        #: `_batch_plan` of the pass's loader (False: none), found at its first batch
        self.batch_plan: tuple[int, int] | None | bool = None

    def to_host(self) -> None:
        """The pass is over: every collected output as host (numpy) arrays."""
        for name, container in self.outputs.items():
            setattr(self, name, container.get_arrays())


class EvaluationMixin:
    """validation / test / predict steps of `HFModule` on top of `prediction_step`."""

    #: whether evaluation metrics are logged through Lightning (``self.log_dict``) at the end of a validation
    logs_eval_to_lightning = True
    #: whether ``prediction_loss_only`` also applies to predict (transformers.Trainer's ``predict`` obeys it; a
    #: Lightning ``trainer.predict`` returns the predictions it was called for)
    loss_only_in_predict = False

    def _init_evaluation(
        self, metrics: list[str] | None, num_labels: int | None, compute_metrics: Any, preprocess_logits: Any,
        batch_eval_metrics: bool, include_for_metrics: list[str], prediction_loss_only: bool,
        multi_label: bool = False, threshold: float = 0.5, use_gather_object: bool = False,
    ) -> None:
        self.metric_names = list(metrics or [])
        collection = build_metrics(self.metric_names, num_labels, multi_label, threshold)
        self.val_metrics = collection.clone() if collection is not None else None
        self.test_metrics = collection.clone() if collection is not None else None
        self.compute_metrics = import_callable(compute_metrics)
        self.preprocess_logits_for_metrics = import_callable(preprocess_logits)
        self.batch_eval_metrics = batch_eval_metrics
        self.eval_use_gather_object = use_gather_object  # gather with all_gather_object across processes
        self.include_for_metrics = include_for_metrics
        self.prediction_loss_only = prediction_loss_only
        self.metric_key_prefix: dict[str, str] = {"validate": "eval", "test": "test", "predict": "test"}
        self.ignore_keys: list[str] | None = None
        self.pass_description: str | None = None  # the log header's name of the pass, where not the stage's
        #: the last validation / test: one metrics dict per evaluation set (several with a dict of eval sets)
        self.eval_record = EvalRecord()
        self._finished_sets: list[dict[str, float]] = []
        self.prediction_output: PredictionOutput | None = None
        self.last_num_samples = 0  # the samples of the last pass (transformers' EvalLoopOutput.num_samples)
        self._stage: _StageState | None = None
        #: passes finished (a pass over no batches is skipped by Lightning, hooks and all: `finish_empty_pass`)
        self.finished_passes = 0
        self._empty_stage: str | None = None

    # ----------------------------------------------------------------------------------------------- HF hook
    def prediction_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, Any, Any]:
        """HF's ``Trainer.prediction_step``: returns ``(loss, logits, labels)``."""
        has_labels = bool(self.label_names) and all(inputs.get(k) is not None for k in self.label_names)
        return_loss = inputs.get("return_loss")
        loss_without_labels = not self.label_names and bool(self.can_return_loss if return_loss is None else return_loss)
        if ignore_keys is None:  # as transformers: the config's keys, "cache" where it names none
            config = getattr(model, "config", None)
            ignore_keys = [] if config is None else list(getattr(config, "keys_to_ignore_at_inference", ["cache"]))
        with_loss = has_labels or loss_without_labels
        labels = nested_detach(tuple(inputs.get(name) for name in self.label_names)) if with_loss else None
        if labels is not None and len(labels) == 1:
            labels = labels[0]
        with torch.no_grad():
            if with_loss:
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True,
                                                  num_items_in_batch=self._eval_num_items(inputs))
                loss = loss.detach().mean()
                skip = [*ignore_keys, "loss"]
            else:
                loss, outputs, skip = None, model(**inputs), ignore_keys
            if isinstance(outputs, dict):
                logits = tuple(v for k, v in outputs.items() if k not in skip)
            else:
                logits = outputs[1:] if with_loss else outputs
        if prediction_loss_only:
            return loss, None, None
        logits = nested_detach(logits)
        if isinstance(logits, (tuple, list)) and len(logits) == 1:
            logits = logits[0]
        return loss, logits, labels

    def _eval_num_items(self, inputs: dict[str, Any]) -> torch.Tensor | None:
        """transformers' ``num_items_in_batch`` of an evaluation batch: its label items (``labels[..., 1:]`` for a
        loss that shifts them), where the model takes loss keywords or a ``compute_loss_func`` is given, else None.
        On the device, no sync. Ranks evaluate different numbers of batches here, so the count is this rank's."""
        if "labels" not in inputs or not (self.model_accepts_loss_kwargs or self.compute_loss_func is not None):
            return None
        labels = inputs["shift_labels"] if "shift_labels" in inputs else inputs["labels"]
        if not torch.is_tensor(labels):
            return None
        if getattr(self, "loss_shifts_labels", False) and "shift_labels" not in inputs:
            labels = labels[..., 1:]
        return labels.ne(-100).sum().float()  # float, as transformers divides it by the parallel sizes

    # ----------------------------------------------------------------------------------------------- steps
    def _stage_name(self) -> str:
        if self._empty_stage is not None:
            return self._empty_stage
        if self.trainer.testing:
            return "test"
        if self.trainer.predicting:
            return "predict"
        return "validate"

    def _metrics_for(self, stage: str) -> Any:
        return self.val_metrics if stage == "validate" else self.test_metrics

    def _scores_predictions(self, stage: str) -> bool:
        """Whether anything scores the predictions of a validation / test (``compute_metrics``, the torchmetrics
        ``metrics``; a task's own metrics in subclasses); without, the evaluation computes the loss only."""
        return self.compute_metrics is not None or self._metrics_for(stage) is not None

    def _eval_step(self, batch: Any, dataloader_idx: int = 0) -> tuple[Any, Any, Any]:
        if self._stage is None:
            self._stage = _StageState(dataloader_idx, self.eval_do_concat_batches)
        if dataloader_idx != self._stage.dataloader_idx:  # Lightning moved on to the next evaluation set
            self._advance_to(dataloader_idx)
        state, stage = self._stage, self._stage_name()
        inputs = dict(batch)
        size = self._samples_in(state, inputs)
        if stage == "predict":
            only_loss = self.prediction_loss_only and self.loss_only_in_predict
        else:  # as transformers' evaluate(): nothing to score the predictions with -> the loss only (no generation)
            only_loss = self.prediction_loss_only or not self._scores_predictions(stage)
        with forward_only_autocast(self.autocast_models(), self.device.type):
            loss, logits, labels = self.prediction_step(self.model, inputs, only_loss, ignore_keys=self.ignore_keys)
        state.num_steps += 1
        state.num_samples += size
        if state.extra_forwards and state.num_steps == state.batches:
            self._even_out_forwards(state, inputs)
        if loss is not None:
            weighted = loss.double() * size if loss.device.type != "mps" else loss.float() * size  # HF: mean repeated per sample
            state.loss_sum = weighted if state.loss_sum is None else state.loss_sum + weighted
            if self.nan_inf_filter:  # on the device: no host sync per batch
                finite = torch.isfinite(weighted)
                counted = torch.stack([torch.where(finite, weighted, 0.0), finite * float(size)])
                state.finite_loss = counted if state.finite_loss is None else state.finite_loss + counted
        if logits is None:
            return loss, logits, labels
        if self.preprocess_logits_for_metrics is not None:  # as transformers: also without labels (labels=None)
            logits = self.preprocess_logits_for_metrics(logits, labels)
        metrics = self._metrics_for(stage)
        if metrics is not None and labels is not None and torch.is_tensor(logits):
            if state.metric_buffer is None:
                state.metric_buffer = MetricBuffer(metrics)
            state.metric_buffer.add(logits, labels)
        if self.compute_metrics is not None or stage == "predict":
            self._collect(state, logits, labels, inputs, loss, size)
        return loss, logits, labels

    def _samples_in(self, state: _StageState, inputs: dict[str, Any]) -> int:
        """The samples the batch was collated from, as transformers weighs each batch's loss: the loader's batch
        size (the rest of the pass's samples for its last batch), also where a padding-free collator flattened them
        into one row; the batch's first dimension where the loader does not say (an iterable data set, batches of a
        sampler of its own)."""
        if state.batch_plan is None:
            state.batch_plan = _batch_plan(self._stage_loader(state.dataloader_idx)) or False
        if state.batch_plan:
            size, total = state.batch_plan
            left = total - state.num_steps * size
            if left > 0:
                return min(size, left)
        return _batch_size(inputs)

    def _even_out_forwards(self, state: _StageState, inputs: dict[str, Any]) -> None:
        with torch.no_grad():
            for _ in range(state.extra_forwards):
                self.model(**inputs)
        state.extra_forwards = 0

    def _collect(self, state: _StageState, logits: Any, labels: Any, inputs: dict[str, Any], loss: Any,
                 size: int) -> None:
        main_input = self._main_input(inputs) if "inputs" in self.include_for_metrics else None
        if self.batch_eval_metrics and self.compute_metrics is not None:
            if labels is not None:  # as transformers: a batch without labels is not scored
                self._score_batch(state, EvalPrediction(logits, labels, **self._extra_fields(inputs, loss, size)))
            if self._stage_name() != "predict":  # predict() still returns every prediction, as transformers
                return
        # On the device, as transformers' evaluation loop: no host copy (and no wait for the device) per batch
        outputs = state.outputs
        outputs["preds"].add(logits)
        if labels is not None:
            outputs["labels"].add(labels)
        if "inputs" in self.include_for_metrics:
            outputs["inputs"].add(main_input)
        if "loss" in self.include_for_metrics and loss is not None:
            outputs["losses"].add(loss.repeat(size))  # the loss's own dtype, as transformers
        if self.eval_accumulation_steps is not None and state.num_steps % self.eval_accumulation_steps == 0:
            for container in outputs.values():  # transformers' eval_accumulation_steps: bounded device memory
                container.to_cpu_and_numpy()

    def _score_batch(self, state: _StageState, prediction: EvalPrediction) -> None:
        """``compute_metrics`` of one batch with ``batch_eval_metrics``; ``compute_result`` on the set's last batch.
        Where the number of batches is unknown (an iterable data set), each batch is scored when the next one
        arrives and the last one when the set ends (`_finish`), so the last call still gets ``compute_result``."""
        total = self._batch_counts()[self._stage.dataloader_idx]
        if math.isfinite(total):
            state.batch_results = self.compute_metrics(prediction, compute_result=state.num_steps == int(total))
            return
        if state.pending_batch is not None:
            state.batch_results = self.compute_metrics(state.pending_batch, compute_result=False)
        state.pending_batch = prediction

    def _main_input(self, inputs: dict[str, Any]) -> Any:
        """The batch's main input (the model's ``main_input_name``) that ``include_for_metrics=["inputs"]`` keeps; a
        batch without it fails at the first evaluation, as in transformers, with the fix named."""
        name = getattr(self.model, "main_input_name", "input_ids")
        if name not in inputs:
            raise KeyError(f"include_for_metrics=['inputs'] keeps each evaluation batch's main input, the model's "
                           f"main_input_name {name!r}, but the batch has no {name!r} (its keys: "
                           f"{', '.join(map(str, inputs))}). Set model.main_input_name to the key of the batch's "
                           f"inputs, or leave 'inputs' out of include_for_metrics.")
        return inputs[name]

    def _extra_fields(self, inputs: dict[str, Any], loss: Any, size: int) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if "inputs" in self.include_for_metrics:  # as transformers: the whole batch, per batch
            extra["inputs"] = inputs
        if "loss" in self.include_for_metrics and loss is not None:
            extra["losses"] = loss.repeat(size)
        return extra

    def _batch_counts(self) -> list[int | float]:
        """Batches per dataloader of the running stage."""
        trainer = self.trainer
        return trainer.num_test_batches if trainer.testing else \
            trainer.num_predict_batches if trainer.predicting else trainer.num_val_batches

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self._eval_step(batch, dataloader_idx)[0]

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self._eval_step(batch, dataloader_idx)[0]

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        _, logits, _ = self._eval_step(batch, dataloader_idx)
        return logits

    # ----------------------------------------------------------------------------------------------- epoch end
    def _eval_set_names(self) -> list[str] | None:
        """The names of several validation sets (the keys of a dict of val dataloaders), else None."""
        loaders = self.trainer.val_dataloaders if self._stage_name() == "validate" else None
        return list(loaders) if isinstance(loaders, dict) and len(loaders) > 0 else None

    def _advance_to(self, dataloader_idx: int) -> None:
        """Finishes the evaluation sets before ``dataloader_idx`` (in order, on every rank: the finish is collective,
        also for a set this rank had no batch of) and starts that one."""
        while self._stage.dataloader_idx < dataloader_idx:
            self._finished_sets.append(self._finish())
            self._start_stage(len(self._finished_sets))

    def finish_sets_before(self, dataloader_idx: int) -> list[dict[str, float]]:
        """Finishes the evaluation sets before ``dataloader_idx`` that are not yet finished (collectively, on every
        rank) and returns their metrics: `HFFlow` writes each set's record as the next set begins."""
        before = len(self._finished_sets)
        if self._stage is not None:
            self._advance_to(dataloader_idx)
        return self._finished_sets[before:]

    def _finish_sets(self) -> list[dict[str, float]]:
        """The metrics of every evaluation set of this stage, in order."""
        if self._stage is None:
            self._stage = _StageState()
        names = self._eval_set_names()
        self._advance_to(len(names) - 1 if names else self._stage.dataloader_idx)
        results, self._finished_sets = [*self._finished_sets, self._finish()], []
        return results

    def finish_empty_pass(self, stage: str) -> None:
        """The results of a pass over no batches (an empty data set, or ``drop_last`` with fewer samples than a
        batch), which Lightning skips without a hook: as transformers gives them, the speed metrics only (and the
        model preparation time), no loss, no predictions (``prediction_output.predictions`` is None)."""
        loaders = self.trainer.predict_dataloaders if stage == "predict" else self.trainer.val_dataloaders
        loaders = loaders.values() if isinstance(loaders, dict) else loaders if isinstance(loaders, list) else [loaders]
        for loader in loaders:  # as an evaluation loop would: each iterator draws its base seed from the global RNG
            if loader is not None:
                iter(loader)
        self._empty_stage = stage
        try:
            self._start_stage(0)  # as a pass would begin (transformers' header is logged for it too)
            results = self._finish_sets()
        finally:
            self._empty_stage = None
        if stage != "predict":
            self.eval_record = EvalRecord(results)

    def _finish(self) -> dict[str, float]:
        state, stage = self._stage or _StageState(), self._stage_name()
        self._stage = None
        self.finished_passes += 1
        prefix = self.metric_key_prefix[stage]
        names = self._eval_set_names()
        if names is not None:  # transformers' prefix for a dict of eval data sets
            prefix = f"{prefix}_{names[state.dataloader_idx]}"
        strategy, several = self.trainer.strategy, self.trainer.world_size > 1
        results: dict[str, float] = {}
        # Every rank takes part in each collective below, also a rank whose share of the data set is empty.
        num_samples = self._summed(float(state.num_samples))
        loss: float | None = None
        if strategy.reduce_boolean_decision(state.loss_sum is not None, all=False):
            zero = torch.zeros((), dtype=torch.float64 if self.device.type != "mps" else torch.float32,
                               device=self.device)
            local = state.loss_sum.detach() if state.loss_sum is not None else zero
            total = strategy.reduce(local, reduce_op="sum") if several else local
            loss = float(total / num_samples)
            if self.nan_inf_filter and not math.isfinite(loss):
                # as transformers: the batches with a finite loss, if there are any
                local = state.finite_loss if state.finite_loss is not None else zero.repeat(2)
                finite_sum, finite_samples = (strategy.reduce(local, reduce_op="sum") if several else local).tolist()
                if finite_samples > 0:
                    loss = finite_sum / finite_samples
        metrics = self._metrics_for(stage)
        buffer = state.metric_buffer
        if buffer is not None:
            buffer.flush()
        if metrics is not None and strategy.reduce_boolean_decision(buffer is not None and buffer.batches > 0,
                                                                    all=False):
            results.update({k: float(v) for k, v in metrics.compute().items()})  # torchmetrics syncs the ranks
            metrics.reset()
        state.to_host()
        if several and not self.batch_eval_metrics:
            if not self.eval_do_concat_batches:
                raise ValueError("eval_do_concat_batches=False keeps per-batch arrays, which cannot be joined across "
                                 f"{self.trainer.world_size} processes here: leave it True with several processes.")
            objects = self.eval_use_gather_object
            shard = getattr(self._stage_loader(state.dataloader_idx), "dataset", None)
            # a stream's shares of each global batch: the rows go back into the stream's order
            order = partial(interleave, batch_size=shard.batch_size) if isinstance(shard, DispatchedShard) else None
            state.preds, state.labels, state.inputs, state.losses = (
                gather_objects_across_ranks(v, order) if objects else
                gather_across_ranks(self, v, order or np.concatenate)
                for v in (state.preds, state.labels, state.inputs, state.losses))
        # transformers' keys, in its order: compute_metrics' (then the torchmetrics'), the loss (it replaces a
        # "<prefix>_loss" of compute_metrics'), the preparation time, the keys without the prefix moved to the end
        # with it (so a bare "loss" of compute_metrics' wins), then the speed metrics.
        results = {**self._hf_metrics(state), **results}
        if loss is not None:
            results[f"{prefix}_loss"] = loss
        results.update({f"{prefix}_{k}": v for k, v in self._preparation_metrics().items()})
        for key in [k for k in results if not k.startswith(f"{prefix}_")]:
            results[f"{prefix}_{key}"] = results.pop(key)
        steps = strategy.reduce(torch.tensor(float(state.num_steps), device=self.device), reduce_op="max") \
            if several else state.num_steps
        # as transformers: the data set's length where it has one (also with dataloader_drop_last), and the batches
        # of that many samples
        loader = self._stage_loader(state.dataloader_idx)
        dataset = _source_dataset(loader)
        samples = (len(dataset) if has_length(dataset) else 0) or int(num_samples)
        batch_size = _loader_batch_size(loader)
        if samples != int(num_samples) and batch_size:
            steps = math.ceil(samples / (batch_size * self.trainer.world_size))
        self.last_num_samples = samples  # transformers' EvalLoopOutput.num_samples
        results.update(speed_metrics(prefix, state.start, num_samples=samples, num_steps=int(steps)))
        if stage == "predict":
            self.prediction_output = PredictionOutput(state.preds, state.labels, results)
        return results

    def _summed(self, value: float) -> float:
        if self.trainer.world_size == 1:
            return value
        return float(self.trainer.strategy.reduce(torch.tensor(value, device=self.device), reduce_op="sum"))

    def _hf_metrics(self, state: _StageState) -> dict[str, float]:
        if self.compute_metrics is None:
            return {}
        if self.batch_eval_metrics:
            if state.pending_batch is not None:
                state.batch_results = self.compute_metrics(state.pending_batch, compute_result=True)
                state.pending_batch = None
            return denumpify_detensorize(state.batch_results or {})
        if state.preds is None or state.labels is None:
            return {}
        extra: dict[str, Any] = {}
        if state.inputs is not None:
            extra["inputs"] = state.inputs
        if state.losses is not None:
            extra["losses"] = state.losses
        # As transformers: compute_result is passed with batch_eval_metrics only (the function's default applies here)
        return denumpify_detensorize(self.compute_metrics(EvalPrediction(state.preds, state.labels, **extra)))

    def _preparation_metrics(self) -> dict[str, float]:
        """Metrics about preparing the model (transformers.Trainer's ``model_preparation_time``); none here."""
        return {}

    def _start_stage(self, dataloader_idx: int = 0) -> None:
        if self.batch_eval_metrics and self.compute_metrics is not None and self.trainer.world_size > 1:
            raise ValueError(
                f"batch_eval_metrics=True with {self.trainer.world_size} processes: ranks evaluate different numbers "
                "of batches, so per-batch results cannot be combined. Set batch_eval_metrics=False (compute_metrics "
                "then sees every sample, gathered across ranks) or use torchmetrics `metrics`, which sync across ranks."
            )
        if dataloader_idx == 0:
            self._finished_sets = []
            metrics = self._metrics_for(self._stage_name())
            if metrics is not None:  # nothing left from a pass that ended early (sanity check, an error)
                metrics.reset()
        self._stage = state = _StageState(dataloader_idx, self.eval_do_concat_batches)
        self._log_pass_start(dataloader_idx)
        from hf_lightning.strategies import forward_is_collective

        if self.trainer.world_size > 1 and forward_is_collective(self.trainer.strategy):
            state.batches = self._stage_batches(dataloader_idx)
            most = self.trainer.strategy.reduce(torch.tensor(float(state.batches), device=self.device), reduce_op="max")
            state.extra_forwards = int(most) - state.batches

    def _log_pass_start(self, dataloader_idx: int) -> None:
        """transformers' evaluation-loop header on its logger (``log_level`` applies): the pass, the examples, the
        batch size."""
        if not log.isEnabledFor(logging.INFO) or self.trainer.sanity_checking:
            return
        stage = self._stage_name()
        loader = self._stage_loader(dataloader_idx)
        datamodule = self.trainer.datamodule
        if stage == "validate" and hasattr(datamodule, "announce_columns"):  # the HF-style door: at each evaluation
            roles = datamodule.validation_roles()
            if dataloader_idx < len(roles):
                datamodule.announce_columns(roles[dataloader_idx])
        description = self.pass_description or ("Prediction" if stage == "predict" else "Evaluation")
        log.info(f"\n***** Running {description} *****")
        dataset = _source_dataset(loader)
        log.info(f"  Num examples = {len(dataset)}" if has_length(dataset) else "  Num examples: Unknown")
        log.info(f"  Batch size = {_loader_batch_size(loader)}")

    def _stage_loader(self, dataloader_idx: int) -> Any:
        """The loader of evaluation set ``dataloader_idx`` of the running stage (None if there is none)."""
        stage = self._stage_name()
        loaders = self.trainer.predict_dataloaders if stage == "predict" else \
            self.trainer.test_dataloaders if stage == "test" else self.trainer.val_dataloaders
        loaders = list(loaders.values()) if isinstance(loaders, dict) else \
            loaders if isinstance(loaders, list) else [loaders]
        return loaders[dataloader_idx] if dataloader_idx < len(loaders) else None

    def _stage_batches(self, dataloader_idx: int) -> int:
        total = self._batch_counts()[dataloader_idx]
        if not math.isfinite(total):
            raise ValueError("Evaluating a data set of unknown length with sharded parameters (FSDP, DeepSpeed ZeRO-3) "
                             "on several processes: give the evaluation data set a length, so ranks can agree.")
        return int(total)

    def on_validation_epoch_start(self) -> None:
        self._start_stage()

    def on_test_epoch_start(self) -> None:
        self._start_stage()

    def on_predict_epoch_start(self) -> None:
        self._start_stage()

    @property
    def eval_results(self) -> dict[str, float]:
        """The last validation's (or test's) metrics, all evaluation sets together (``eval_record.metrics``)."""
        return self.eval_record.metrics

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._stage = None
            return
        self.eval_record = EvalRecord(self._finish_sets())
        # Inside fit: for Lightning callbacks (monitor="eval_loss"), HFFlow writes the HF-style eval/* logger records.
        # A standalone validate() logs them itself, so its result table and return value hold the metrics.
        # The keys already name their set: no "/dataloader_idx_<n>" suffix.
        if self.logs_eval_to_lightning:
            self._log_results(logger=self.trainer.state.fn != "fit")

    def on_test_epoch_end(self) -> None:
        self.eval_record = EvalRecord(self._finish_sets())
        self._log_results(logger=True)

    def _log_results(self, logger: bool) -> None:
        """``log_dict`` of the results: Lightning's ``validate()`` / ``test()`` return what is logged for loggers, with
        or without one configured, so its per-key "no logger configured" warning is left out where there is none."""
        with warnings.catch_warnings():
            if not self.trainer.loggers:
                warnings.filterwarnings("ignore", message=r"You called `self\.log\(")
            self.log_dict(self.eval_record.metrics, logger=logger, add_dataloader_idx=False)

    def on_predict_epoch_end(self) -> None:
        self._finish_sets()
