"""The translation table: where every ``transformers.TrainingArguments`` field goes, and the legacy names.

``ROUTES`` has one entry per dataclass field of the installed ``transformers.TrainingArguments`` (a unit test checks
the key set against ``dataclasses.fields`` so a new transformers release fails loudly). ``SEQ2SEQ_ROUTES`` adds the
fields of ``transformers.Seq2SeqTrainingArguments``, ``EXTRA_ROUTES`` the fields this package adds. ``LEGACY`` maps
names that transformers 5.x removed to what replaces them (defined in ``_args_legacy.py``, re-exported here).
Conversions are small named functions referenced from the tables; the first line of each docstring is what the
migration table shows in its "as" column.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from hf_lightning._args_legacy import LEGACY, Legacy

MODULE = "module"
DATAMODULE = "datamodule"
TRAINER = "trainer"
STRATEGY = "strategy"
FACADE = "facade"
UNSUPPORTED = "unsupported"
CHECKPOINT = "callback:HFCheckpoint"
LOGGING = "callback:HFFlow"


# ----------------------------------------------------------------------------------------------- conversions
def _plain(value: Any, args: Any) -> Any:
    """as is (enums as their string value)"""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list):
        return [v.value if isinstance(v, Enum) else v for v in value]
    return copy.copy(value) if isinstance(value, dict) else value


def _warmup(value: Any, args: Any) -> Any:
    """int step count when >= 1, else a float ratio of the total steps (transformers' get_warmup_steps)"""
    return int(value) if value >= 1 or value == 0 else float(value)


def _precision(value: Any, args: Any) -> str:
    """"16-mixed" (fp16 on a GPU), "bf16-mixed" (bf16), else "32-true" (fp16 on the CPU too, as accelerate)"""
    if args.fp16:
        import torch

        return "32-true" if args.use_cpu or not torch.cuda.is_available() else "16-mixed"
    return "bf16-mixed" if args.bf16 else "32-true"


def _accelerator(value: Any, args: Any) -> str:
    """"cpu" when True, else "auto" """
    return "cpu" if value else "auto"


def _true_or_none(value: Any, args: Any) -> bool | None:
    """True when set, else None (Lightning leaves torch's flags alone)"""
    return True if value else None


def _as_dict(value: Any, args: Any) -> dict[str, Any] | None:
    """a plain dict (AcceleratorConfig.to_dict())"""
    return value.to_dict() if hasattr(value, "to_dict") else copy.copy(value)


def _generation_config(value: Any, args: Any) -> str | dict[str, Any] | None:
    """a dict (GenerationConfig.to_dict()), or the path / model id as a str"""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return os.fspath(value) if value is not None else None


def _logging_dir(value: Any, args: Any) -> str | None:
    """value, else $TENSORBOARD_LOGGING_DIR, else None (HFFlow uses output_dir/runs/<date>_<host>)"""
    value = value if value is not None else os.environ.get("TENSORBOARD_LOGGING_DIR")
    return os.path.expanduser(value) if value is not None else None


@dataclass(frozen=True)
class Route:
    """Where one field goes.

    Attributes:
        target: ``module``, ``datamodule``, ``trainer``, ``callback:<Name>``, ``strategy``, ``facade`` or
            ``unsupported``.
        name: The keyword at the destination; empty means the field's own name.
        note: Why / how (for ``unsupported``: the message, naming the alternative).
        convert: ``(value, args) -> value`` applied on the way.
    """

    target: str
    name: str = ""
    note: str = ""
    convert: Callable[[Any, Any], Any] = _plain


def _no(note: str) -> Route:
    return Route(UNSUPPORTED, note=note)


_DDP = "a keyword of Lightning's DDPStrategy, built by hf_lightning.strategies"
_HUB = "only read when pushing to the Hub (push_to_hub is unsupported); kept on the arguments"
_SCRIPT = "for your script, as in transformers (Trainer itself does not read it)"
_TRACKIO = ("syncs Trackio to a Hugging Face Space or bucket (the Hub); report_to='trackio' logs locally, to "
            "$TRACKIO_DIR")

ROUTES: dict[str, Route | tuple[Route, ...]] = {
    "output_dir": (
        Route(TRAINER, "default_root_dir", "root of Lightning's logs"),
        Route(CHECKPOINT, "output_dir", "checkpoint-<step>/ folders, as transformers"),
    ),
    "per_device_train_batch_size": Route(DATAMODULE, "batch_size"),
    "num_train_epochs": Route(FACADE, note="max_epochs, or max_steps = ceil(epochs * updates_per_epoch) if fractional"),
    "max_steps": Route(TRAINER, "max_steps", "-1 means no limit in both"),
    "learning_rate": Route(MODULE, "optimization.learning_rate"),
    "lr_scheduler_type": Route(MODULE, "optimization.lr_scheduler_type",
                               note="built with transformers.get_scheduler; reduce_lr_on_plateau and greedy step on "
                                    "metric_for_best_model after each evaluation, as transformers"),
    "lr_scheduler_kwargs": Route(MODULE, "optimization.lr_scheduler_kwargs"),
    "warmup_steps": Route(MODULE, "optimization.warmup_steps", convert=_warmup),
    "optim": Route(MODULE, "optimization.optim", note="resolved with Trainer.get_optimizer_cls_and_kwargs"),
    "optim_args": Route(MODULE, "optimization.optim_args"),
    "weight_decay": Route(MODULE, "optimization.weight_decay",
                          note="not applied to biases and norm weights, as transformers"),
    "adam_beta1": Route(MODULE, "optimization.adam_beta1"),
    "adam_beta2": Route(MODULE, "optimization.adam_beta2"),
    "adam_epsilon": Route(MODULE, "optimization.adam_epsilon"),
    "optim_target_modules": Route(MODULE, "optimization.optim_target_modules"),
    "gradient_accumulation_steps": Route(TRAINER, "accumulate_grad_batches"),
    "average_tokens_across_devices": Route(MODULE),
    "max_grad_norm": Route(MODULE, "optimization.max_grad_norm",
                           note="0 disables clipping; grad_norm is logged either way"),
    "label_smoothing_factor": Route(MODULE, note="transformers' LabelSmoother"),
    "bf16": Route(TRAINER, "precision", convert=_precision),
    "fp16": Route(TRAINER, "precision", convert=_precision),
    "bf16_full_eval": Route(FACADE, note="evaluate() / predict() cast the model to bfloat16 first, as transformers"),
    "fp16_full_eval": Route(FACADE, note="evaluate() / predict() cast the model to float16 first, as transformers"),
    "tf32": Route(STRATEGY, note="applied to torch's TF32 flags when the arguments are built, as transformers"),
    "activation_checkpointing": Route(MODULE, "gradient_checkpointing"),
    "activation_checkpointing_kwargs": Route(MODULE, "gradient_checkpointing_kwargs"),
    "gradient_checkpointing": Route(MODULE, "gradient_checkpointing", "old name; mirrors activation_checkpointing"),
    "gradient_checkpointing_kwargs": Route(MODULE, "gradient_checkpointing_kwargs",
                                           "old name; mirrors activation_checkpointing_kwargs"),
    "torch_compile": Route(MODULE, "compilation.torch_compile"),
    "torch_compile_backend": Route(MODULE, "compilation.torch_compile_backend"),
    "torch_compile_mode": Route(MODULE, "compilation.torch_compile_mode"),
    "use_liger_kernel": Route(MODULE, note="the model patched with Liger's kernels before training (CUDA; the liger "
                                           "extra)"),
    "liger_kernel_config": Route(MODULE, note="keyword arguments of Liger's patch"),
    "use_cache": Route(FACADE, note="sets model.config.use_cache, as transformers.Trainer"),
    "neftune_noise_alpha": Route(MODULE),
    "torch_empty_cache_steps": Route(LOGGING, note="HFFlow frees the accelerator's cache every N steps, before the "
                                                   "backward pass (transformers' point)"),
    "auto_find_batch_size": Route(FACADE, note="on an out-of-memory error, retrain with 0.9 x the per-device batch "
                                               "size (transformers' accelerate retry); the HF-style Trainer only"),
    "logging_strategy": Route(LOGGING),
    "logging_steps": Route(LOGGING, note="a float < 1 is a ratio of the total steps"),
    "logging_first_step": Route(LOGGING),
    "log_on_each_node": Route(LOGGING, note="with log_level_replica: transformers' get_process_log_level per rank"),
    "logging_nan_inf_filter": (
        Route(LOGGING, note="a nan / inf step loss counts as the mean of the steps since the last log"),
        Route(MODULE, "evaluation.nan_inf_filter", "evaluation leaves batches with a nan / inf loss out of the loss"),
    ),
    "include_num_input_tokens_seen": Route(LOGGING, note="'all', 'non_padding' or 'no'"),
    "log_level": Route(LOGGING, note="transformers' log verbosity on the main process (Trainer messages included)"),
    "log_level_replica": Route(LOGGING, note="transformers' log verbosity on replicas (get_process_log_level)"),
    "disable_tqdm": Route(FACADE, note="transformers' ProgressCallback bars, or its PrinterCallback when True (the "
                                       "HF-style Trainer turns Lightning's bar off); in yaml: trainer.enable_progress_bar"),
    "report_to": Route(LOGGING, note="a list after transformers' normalisation ('none' -> [])"),
    "run_name": Route(LOGGING),
    "project": Route(FACADE, note="the Trackio project of report_to='trackio' (transformers' TrackioCallback)"),
    "trackio_space_id": _no(_TRACKIO),
    "trackio_bucket_id": _no(_TRACKIO),
    "trackio_static_space_id": _no(_TRACKIO),
    "eval_strategy": Route(LOGGING, note="HFFlow schedules evaluation"),
    "eval_steps": Route(LOGGING, note="defaults to logging_steps, as transformers"),
    "eval_delay": Route(LOGGING),
    "per_device_eval_batch_size": Route(DATAMODULE, "eval_batch_size"),
    "prediction_loss_only": Route(MODULE, "evaluation.prediction_loss_only",
                                  "validation and test compute the loss only; `lightning.Trainer.predict` still returns "
                                  "the predictions it is called for (the HF-style `predict()` obeys it, as transformers). "
                                  "As transformers' `evaluate()`, a validation with nothing to score its predictions (no "
                                  "`compute_metrics`, no `metrics`, no task metric such as ROUGE or seqeval) computes the "
                                  "loss only, whatever this is: no logits kept, no generation"),
    "eval_on_start": Route(LOGGING),
    "eval_do_concat_batches": Route(MODULE, "evaluation.eval_do_concat_batches"),
    "eval_use_gather_object": Route(MODULE, "evaluation.eval_use_gather_object",
                                    note="several processes: predictions gathered as Python objects "
                                         "(all_gather_object); one process: no effect, as transformers"),
    "eval_accumulation_steps": Route(MODULE, "evaluation.eval_accumulation_steps"),
    "include_for_metrics": Route(MODULE, "evaluation.include_for_metrics"),
    "batch_eval_metrics": Route(MODULE, "evaluation.batch_eval_metrics"),
    "save_only_model": Route(CHECKPOINT),
    "save_strategy": Route(CHECKPOINT),
    "save_steps": Route(CHECKPOINT, note="a float < 1 is a ratio of the total steps"),
    "save_on_each_node": Route(CHECKPOINT),
    "save_total_limit": Route(CHECKPOINT, note="the best checkpoint is never deleted"),
    "enable_jit_checkpoint": Route(CHECKPOINT, note="on SIGTERM: a checkpoint at the end of the current step, then a "
                                                    "clean stop (ranks agree at each step)"),
    "push_to_hub": _no("train, then call model.push_to_hub(repo_id) (and tokenizer.push_to_hub) on the exported "
                       "folder"),
    "hub_token": Route(FACADE, note=_HUB),
    "hub_private_repo": Route(FACADE, note=_HUB),
    "hub_model_id": Route(FACADE, note=_HUB),
    "hub_strategy": Route(FACADE, note=_HUB),
    "hub_always_push": Route(FACADE, note=_HUB),
    "hub_revision": Route(FACADE, note=_HUB),
    "load_best_model_at_end": Route(CHECKPOINT),
    "metric_for_best_model": (
        Route(LOGGING, note="HFFlow decides each new best (and steps plateau schedules on it)"),
        Route(CHECKPOINT, note="'loss' when load_best_model_at_end, as transformers"),
    ),
    "greater_is_better": (
        Route(LOGGING, note="defaults to not metric.endswith('loss')"),
        Route(CHECKPOINT, note="defaults to not metric.endswith('loss')"),
    ),
    "ignore_data_skip": Route(CHECKPOINT),
    "restore_callback_states_from_checkpoint": Route(CHECKPOINT),
    "full_determinism": (
        Route(TRAINER, "deterministic", convert=_true_or_none),
        Route(FACADE, "full_determinism", "enable_full_determinism(seed) instead of set_seed(seed)"),
    ),
    "seed": (
        Route(DATAMODULE, "seed", "per-epoch sample order: randperm seeded with seed + epoch"),
        Route(FACADE, "seed", "set_seed(seed) before the model is built, as transformers"),
    ),
    "data_seed": Route(DATAMODULE),
    "use_cpu": Route(TRAINER, "accelerator", convert=_accelerator),
    "accelerator_config": Route(STRATEGY, convert=_as_dict),
    "parallelism_config": Route(STRATEGY),
    "dataloader_drop_last": Route(DATAMODULE, "loader.drop_last",
                                  note="training and evaluation loaders, as transformers: not a stream's (an "
                                       "IterableDataset keeps its short last batch)"),
    "dataloader_num_workers": Route(DATAMODULE, "loader.num_workers"),
    "dataloader_pin_memory": Route(DATAMODULE, "loader.pin_memory", "False when use_cpu, as transformers"),
    "dataloader_persistent_workers": Route(DATAMODULE, "loader.persistent_workers"),
    "dataloader_prefetch_factor": Route(DATAMODULE, "loader.prefetch_factor"),
    "dataloader_multiprocessing_context": Route(DATAMODULE, "loader.multiprocessing_context",
                                                "the DataLoader workers' start method (with num_workers > 0)"),
    "dataloader_in_order": Route(DATAMODULE, "loader.in_order", "False lets workers deliver batches out of order"),
    "remove_unused_columns": Route(DATAMODULE),
    "label_names": Route(MODULE, note="unset: the label arguments of the model's forward, as transformers "
                                      "(`start_positions` / `end_positions` for question answering; an evaluation loss needs every "
                                      "one in the batch); `[]`: no labels"),
    "train_sampling_strategy": Route(DATAMODULE, "sampling_strategy"),
    "length_column_name": Route(DATAMODULE),
    "ddp_find_unused_parameters": Route(STRATEGY, note=_DDP),
    "ddp_bucket_cap_mb": Route(STRATEGY, note=_DDP),
    "ddp_broadcast_buffers": Route(STRATEGY, note=_DDP),
    "ddp_static_graph": Route(STRATEGY, note=_DDP),
    "ddp_backend": Route(STRATEGY, note="process group backend"),
    "ddp_timeout": Route(STRATEGY, note="process group timeout in seconds"),
    "fsdp": Route(STRATEGY, note="True after transformers' normalisation of the legacy string forms"),
    "fsdp_config": Route(STRATEGY, note="normalised by transformers (fsdp_ prefixes dropped)"),
    "deepspeed": Route(STRATEGY, note="config dict or JSON path"),
    "debug": Route(FACADE, note="underflow_overflow: transformers' DebugUnderflowOverflow on the model at train() "
                                "(raises at the first inf / nan); tpu_metrics_debug is refused (no TPU)"),
    "skip_memory_metrics": Route(LOGGING, note="False: transformers' *_mem_* metrics in train / evaluate / predict"),
    "do_train": Route(FACADE, note=_SCRIPT),
    "do_eval": Route(FACADE, note=_SCRIPT),
    "do_predict": Route(FACADE, note=_SCRIPT),
    "resume_from_checkpoint": Route(FACADE, note=_SCRIPT + "; pass it to train(resume_from_checkpoint=...)"),
    "local_rank": Route(FACADE, note="informational; Lightning assigns ranks"),
}

SEQ2SEQ_ROUTES: dict[str, Route | tuple[Route, ...]] = {
    "sortish_sampler": Route(FACADE, note="accepted and ignored, as transformers 5.x ignores it (a length-grouped "
                                          "order: train_sampling_strategy='group_by_length')"),
    "predict_with_generate": Route(MODULE, note="Seq2SeqModule: generate in evaluation / prediction"),
    "generation_max_length": Route(MODULE, note="Seq2SeqModule"),
    "generation_num_beams": Route(MODULE, note="Seq2SeqModule"),
    "generation_config": Route(MODULE, convert=_generation_config, note="Seq2SeqModule"),
}

EXTRA_ROUTES: dict[str, Route | tuple[Route, ...]] = {
    "logging_dir": Route(LOGGING, convert=_logging_dir, note="TensorBoard directory; not a transformers 5.x field"),
    "torch_compile_scope": Route(MODULE, "compilation.torch_compile_scope",
                                 note="'blocks': regional compilation of the repeated blocks; not a transformers field"),
}


def routes_for(field_name: str) -> tuple[Route, ...] | None:
    """The routes of one field, or None when no table knows it."""
    for table in (ROUTES, SEQ2SEQ_ROUTES, EXTRA_ROUTES):
        if field_name in table:
            found = table[field_name]
            return found if isinstance(found, tuple) else (found,)
    return None


__all__ = [
    "CHECKPOINT", "DATAMODULE", "EXTRA_ROUTES", "FACADE", "LEGACY", "LOGGING", "MODULE", "ROUTES", "SEQ2SEQ_ROUTES",
    "STRATEGY", "TRAINER", "UNSUPPORTED", "Legacy", "Route", "routes_for",
]
