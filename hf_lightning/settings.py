"""Each component's own typed settings, translated once from ``TrainingArguments`` (or given in yaml).

``translate(args)`` (``hf_lightning/args.py``) fills these from the one table in ``_args_table.py``: the fields routed
to ``callback:HFFlow`` become a `FlowSettings`, those routed to ``callback:HFCheckpoint`` a `CheckpointSettings`
(``tests/unit/test_settings.py`` checks that the field sets and the table agree). The CLI builds the same types from
the components' keyword arguments. Components read their own settings; none of them reads or changes a shared
``TrainingArguments``.

transformers' ``TrainerCallback``s still receive a ``TrainingArguments`` (``DefaultFlowCallback`` decides when to log,
evaluate and save from it, and checkpoints carry it as ``training_args.bin``): that read-only view is the user's own
arguments in the HF-style Trainer, and `hf_lightning.args.callback_arguments` builds it from these settings in the
Lightning door, once per fit.
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Literal

from transformers.trainer_utils import IntervalStrategy, SaveStrategy
from typing_extensions import Self


@dataclass(frozen=True)
class _FromArgs:
    """``from_args`` / ``replace`` for the frozen settings dataclasses below (a dataclass itself, without fields, so
    jsonargparse treats its subclasses as plain nested groups: ``--model.optimization.learning_rate``)."""

    @classmethod
    def from_args(cls, args: Any) -> Self:
        """The settings named like this class's fields, read from a ``TrainingArguments`` (enums as their values; a
        field the arguments lack, such as ``logging_dir`` on transformers' own class, keeps its default)."""
        from hf_lightning._args_table import _plain

        return cls(**{f.name: _plain(getattr(args, f.name), args)  # type: ignore[arg-type]
                      for f in fields(cls) if hasattr(args, f.name)})

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class FlowSettings(_FromArgs):
    """`HFFlow`'s settings: logging, the evaluation schedule, the best metric, what the run reports (transformers'
    defaults). The fields and their meaning are ``TrainingArguments``'; see `HFFlow` for each."""

    logging_strategy: str = "steps"
    logging_steps: float = 500
    logging_first_step: bool = False
    logging_nan_inf_filter: bool = True
    eval_strategy: str = "no"
    eval_steps: float | None = None
    eval_delay: float = 0
    eval_on_start: bool = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    include_num_input_tokens_seen: str | bool = "no"
    log_level: str = "passive"
    log_level_replica: str = "warning"
    log_on_each_node: bool = True
    report_to: str | list[str] | None = None
    run_name: str | None = None
    logging_dir: str | None = None
    skip_memory_metrics: bool = True
    torch_empty_cache_steps: int | None = None

    def __post_init__(self) -> None:
        from transformers.training_args import trainer_log_levels

        for name in ("log_level", "log_level_replica"):  # transformers' TrainingArguments checks them when built
            value = getattr(self, name)
            if value not in trainer_log_levels:
                raise ValueError(f"{name}={value!r} is not a log level: choose one of {sorted(trainer_log_levels)}.")
        # what transformers' TrainingArguments refuses on its own, refused when HFFlow is built (a yaml typo fails
        # before the model loads), naming the setting
        _check_choice(self, "logging_strategy", IntervalStrategy)
        _check_choice(self, "eval_strategy", IntervalStrategy)
        _check_metric_name(self.metric_for_best_model)
        if self.logging_strategy == IntervalStrategy.STEPS and self.logging_steps == 0:
            raise ValueError("logging_steps=0 with logging_strategy='steps': log every N steps with logging_steps=N, "
                             "or set logging_strategy='no'.")


@dataclass(frozen=True)
class CheckpointSettings(_FromArgs):
    """`HFCheckpoint`'s settings: where and when checkpoints are written, rotation, the best model, resume
    (transformers' defaults). The fields and their meaning are ``TrainingArguments``'; see `HFCheckpoint`."""

    output_dir: str = "hf_lightning_output"
    save_strategy: str = "steps"
    save_steps: float = 500
    save_total_limit: int | None = None
    save_only_model: bool = False
    save_on_each_node: bool = False
    load_best_model_at_end: bool = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    restore_callback_states_from_checkpoint: bool = False
    ignore_data_skip: bool = False
    enable_jit_checkpoint: bool = False

    def __post_init__(self) -> None:
        _check_choice(self, "save_strategy", SaveStrategy)
        _check_metric_name(self.metric_for_best_model)

    @property
    def tracks_best_checkpoint(self) -> bool:
        """Whether ``best_global_step`` names a checkpoint (transformers: only when checkpoints are saved)."""
        return self.save_strategy in ("steps", "epoch", "best")


def _check_choice(settings: Any, name: str, choices: type[Enum]) -> None:
    value = getattr(settings, name)
    known = [c.value for c in choices]
    if value not in known:
        raise ValueError(unknown_name(name, value, known))


def _check_metric_name(metric: Any) -> None:
    if metric is not None and not isinstance(metric, str):
        raise TypeError(f"metric_for_best_model={metric!r} must be the name of an evaluation metric (a string such "
                        "as 'eval_loss' or 'accuracy'), or None.")


#: Metric-name endings where lower is better, beyond transformers' own rule (only a name ending in ``loss`` is
#: minimised when ``greater_is_better`` is unset). The report's "best" uses the same list.
LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "perplexity", "ppl", "wer", "cer", "error")


def warn_if_error_metric_maximised(metric: str | None, greater_is_better: bool | None) -> None:
    """transformers' default direction maximises every metric whose name does not end in ``loss``: for an error
    metric (``eval_mse``, ``wer``...) that keeps the worst model as "best". Kept for parity, said out loud."""
    if metric is None or greater_is_better is not None or metric.endswith("loss") \
            or not metric.lower().endswith(LOWER_IS_BETTER):
        return
    warnings.warn(f"metric_for_best_model={metric!r} with greater_is_better unset: transformers' rule treats the "
                  "largest value as best (only names ending in 'loss' are minimised), so the best checkpoint is the one "
                  "with the largest error. Set greater_is_better=False if lower is better.", UserWarning, stacklevel=3)


@dataclass(frozen=True)
class BestMetric:
    """The metric that defines the best model, resolved once from `FlowSettings` and `CheckpointSettings`.

    Attributes:
        name: ``metric_for_best_model`` (``loss`` when only ``load_best_model_at_end`` is set, as transformers), or
            None when no best model is tracked.
        greater_is_better: Whether a larger value is better (default: the name does not end in ``loss``).
    """

    name: str | None = None
    greater_is_better: bool = False

    @property
    def key(self) -> str | None:
        """The key in the evaluation metrics (``eval_<name>``)."""
        if self.name is None:
            return None
        return self.name if self.name.startswith("eval_") else f"eval_{self.name}"

    @classmethod
    def resolve(cls, flow: FlowSettings, checkpoint: CheckpointSettings) -> BestMetric:
        """One metric from the two places a recipe may name it; they must agree when both do.

        Raises:
            ValueError: HFFlow and HFCheckpoint name different metrics (or directions).
        """
        for name in ("metric_for_best_model", "greater_is_better"):
            a, b = getattr(flow, name), getattr(checkpoint, name)
            if a is not None and b is not None and a != b:
                raise ValueError(f"{name} is {a!r} on HFFlow but {b!r} on HFCheckpoint: set it in one place.")
        metric = flow.metric_for_best_model or checkpoint.metric_for_best_model
        greater = flow.greater_is_better if flow.greater_is_better is not None else checkpoint.greater_is_better
        if metric is None and checkpoint.load_best_model_at_end:
            metric = "loss"  # transformers' TrainingArguments.__post_init__
        if greater is None:
            warn_if_error_metric_maximised(metric, greater)
            greater = metric is not None and not metric.endswith("loss")
        return cls(metric, bool(greater))


# ------------------------------------------------------------------------------------ HFModule's grouped settings
#: optimizers whose update happens in backward (transformers' LOMO family); layer-wise ones end with "_layerwise"
_STEPS_INSIDE_BACKWARD = ("lomo", "adalomo")


def unknown_name(field: str, value: Any, known: list[str]) -> str:
    """The message for a name that is not one of ``known``: the field, the closest name, the choices."""
    close = difflib.get_close_matches(str(value), known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"{field}='{value}' is unknown.{hint} Choose one of {sorted(known)}."


def refused_optimizer(name: str) -> str | None:
    """Why hf_lightning cannot train with the transformers optimizer ``name`` (and what to use), or None."""
    if name not in _STEPS_INSIDE_BACKWARD and not name.endswith("_layerwise"):
        return None
    return ("updates the weights inside backward (transformers runs it through accelerate's backward or per-parameter "
            "gradient hooks), which Lightning's optimizer step cannot drive: choose another optimizer (the same "
            "family without '_layerwise', such as 'galore_adamw', or 'adamw_torch').")


@dataclass(frozen=True)
class OptimizerSettings(_FromArgs):
    """Optimizer and schedule (``model.init_args.optimization`` in yaml; transformers' defaults).

    Args:
        learning_rate: Peak learning rate (HF ``learning_rate``).
        weight_decay: Weight decay of all weights but biases and norm layers.
        adam_beta1: Adam beta1.
        adam_beta2: Adam beta2.
        adam_epsilon: Adam epsilon.
        optim: transformers optimizer name (``adamw_torch_fused``, ``adamw_torch``, ``adafactor``, ``sgd``...).
        optim_args: Extra optimizer arguments ``"k=v,k=v"``.
        optim_target_modules: Target modules of GaLore-style optimizers.
        lr_scheduler_type: A ``transformers.SchedulerType`` (linear, cosine, constant_with_warmup, ...).
        lr_scheduler_kwargs: Extra scheduler arguments (e.g. ``num_cycles``).
        warmup_steps: Warmup steps (>= 1; a fraction is dropped, as transformers does) or ratio of the total steps
            (< 1).
        max_grad_norm: Gradient clipping norm; 0 or less disables clipping (the norm is still logged).
    """

    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    optim: str = "adamw_torch_fused"
    optim_args: str | None = None
    optim_target_modules: Any = None
    lr_scheduler_type: str = "linear"
    lr_scheduler_kwargs: dict[str, Any] | None = None
    warmup_steps: float = 0
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if self.learning_rate < 0 or self.warmup_steps < 0:  # a max_grad_norm <= 0 means no clipping, as in HF
            raise ValueError(f"optimization: learning_rate={self.learning_rate} and warmup_steps={self.warmup_steps} "
                             "must be >= 0.")
        # Names are checked here, when the settings are built (before any model or data loads), not when
        # configure_optimizers first needs them.
        from transformers import SchedulerType
        from transformers.training_args import OptimizerNames

        refused = refused_optimizer(self.optim)
        if refused is not None:
            raise ValueError(f"optimization.optim='{self.optim}' {refused}")
        for field, value, names in (("optim", self.optim, OptimizerNames),
                                    ("lr_scheduler_type", self.lr_scheduler_type, SchedulerType)):
            known = [n.value for n in names if field != "optim" or refused_optimizer(n.value) is None]
            if value not in known:
                raise ValueError(unknown_name(f"optimization.{field}", value, known))


@dataclass(frozen=True)
class EvaluationSettings(_FromArgs):
    """How evaluation collects and scores outputs (``model.init_args.evaluation`` in yaml; transformers' defaults).

    Args:
        prediction_loss_only: Evaluation computes the loss only.
        batch_eval_metrics: Call ``compute_metrics(eval_pred, compute_result=...)`` per batch instead of once.
        include_for_metrics: Extra fields in the EvalPrediction: ``inputs`` and/or ``loss``.
        eval_use_gather_object: With several processes, gather the predictions, labels and inputs as Python objects
            (``torch.distributed.all_gather_object``) instead of padded tensors; one process: no effect.
        eval_do_concat_batches: Concatenate predictions across batches (False keeps a list of per-batch arrays).
        eval_accumulation_steps: Move the collected predictions to the host every N evaluation batches (bounded device
            memory); None keeps them on the device until the end of the pass, as transformers does.
        metric_threshold: Probability above which a label counts as predicted by multi-label metrics (hf_lightning's
            own; not a transformers field).
        nan_inf_filter: Leave the batches whose loss is nan or inf out of the evaluation loss, where any batch's is
            finite (transformers' ``logging_nan_inf_filter``, which also filters the logged training loss).
    """

    prediction_loss_only: bool = False
    batch_eval_metrics: bool = False
    include_for_metrics: list[str] = dataclasses.field(default_factory=list)
    eval_use_gather_object: bool = False
    eval_do_concat_batches: bool = True
    eval_accumulation_steps: int | None = None
    metric_threshold: float = 0.5
    nan_inf_filter: bool = True


@dataclass(frozen=True)
class CompileSettings(_FromArgs):
    """``torch.compile`` of the model before training (``model.init_args.compilation`` in yaml).

    Args:
        torch_compile: Compile the model with ``torch.compile`` before training.
        torch_compile_backend: Backend of ``torch.compile`` (default inductor); setting it turns compilation on.
        torch_compile_mode: Mode of ``torch.compile`` (default, reduce-overhead, max-autotune); setting it turns
            compilation on.
        torch_compile_scope: What is compiled: ``model`` (the whole model, as transformers.Trainer does) or ``blocks``
            (regional compilation: each repeated encoder / decoder block is compiled in place and the compiled code is
            re-used by every block of the stack, so compile time does not grow with depth; the glue around them runs
            eagerly). Parameter names do not change either way.
    """

    torch_compile: bool = False
    torch_compile_backend: str | None = None
    torch_compile_mode: str | None = None
    torch_compile_scope: Literal["model", "blocks"] = "model"

    def __post_init__(self) -> None:
        if self.torch_compile_scope not in ("model", "blocks"):
            raise ValueError(f"compilation.torch_compile_scope='{self.torch_compile_scope}': use 'model' (the whole "
                             "model) or 'blocks' (each repeated encoder / decoder block, compiled once).")
        if self.torch_compile_backend is not None:
            from torch._dynamo import list_backends  # the backends torch.compile takes, registered ones included

            if self.torch_compile_backend not in list_backends(exclude_tags=()):  # transformers raises at Trainer()
                raise ValueError(unknown_name("compilation.torch_compile_backend", self.torch_compile_backend,
                                              list_backends()))  # the choices shown: debug / experimental left out

    @property
    def enabled(self) -> bool:
        """transformers' rule: a backend or mode turns compilation on too."""
        return bool(self.torch_compile or self.torch_compile_backend or self.torch_compile_mode)

    @property
    def kwargs(self) -> dict[str, Any] | None:
        """``torch.compile``'s keyword arguments, or None when compilation is off."""
        if not self.enabled:
            return None
        return {k: v for k, v in {"backend": self.torch_compile_backend, "mode": self.torch_compile_mode}.items() if v}


@dataclass(frozen=True)
class LoaderSettings(_FromArgs):
    """The DataLoaders' worker and batching options (``data.init_args.loader`` in yaml; transformers' ``dataloader_*``
    fields, named as ``torch.utils.data.DataLoader``'s arguments).

    Args:
        num_workers: DataLoader worker processes (``dataloader_num_workers``).
        pin_memory: Pin host memory, only used when CUDA is available (``dataloader_pin_memory``).
        persistent_workers: Keep workers alive between epochs (``dataloader_persistent_workers``).
        prefetch_factor: Batches prefetched per worker (``dataloader_prefetch_factor``).
        multiprocessing_context: Start method of the workers (``spawn``, ``fork``, ``forkserver``; num_workers > 0).
        in_order: False lets workers hand over batches as they finish (faster with uneven batches; order not kept).
        drop_last: Drop the last incomplete batch, in training and in evaluation (``dataloader_drop_last``); as in
            transformers, not a stream's (an ``IterableDataset``).
    """

    num_workers: int = 0
    pin_memory: bool = True
    persistent_workers: bool = False
    prefetch_factor: int | None = None
    multiprocessing_context: str | None = None
    in_order: bool = True
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"loader.num_workers={self.num_workers} must be >= 0.")


__all__ = [
    "LOWER_IS_BETTER", "BestMetric", "CheckpointSettings", "CompileSettings", "EvaluationSettings", "FlowSettings",
    "LoaderSettings", "OptimizerSettings", "warn_if_error_metric_maximised",
]
