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
import warnings
from dataclasses import dataclass, fields
from typing import Any

from typing_extensions import Self


class _FromArgs:
    """``from_args`` / ``replace`` for the frozen settings dataclasses below."""

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

    @property
    def tracks_best_checkpoint(self) -> bool:
        """Whether ``best_global_step`` names a checkpoint (transformers: only when checkpoints are saved)."""
        return self.save_strategy in ("steps", "epoch", "best")


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


__all__ = ["LOWER_IS_BETTER", "BestMetric", "CheckpointSettings", "FlowSettings", "warn_if_error_metric_maximised"]
