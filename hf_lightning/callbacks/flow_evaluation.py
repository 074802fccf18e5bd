"""HFFlow's side of evaluation during training: running Lightning's validation loop where HF evaluates
(``_evaluate``), and, as a validation ends, what transformers' ``evaluate`` does with its metrics: one log record and
``on_evaluate`` per evaluation set, the best metric tracked and a metric-stepped schedule stepped (when Lightning's own
schedule decides when to validate). A mixin of `HFFlow`, which owns the state these methods read and write
(``settings``, ``control``, ``handler``, ``control_validation``) and, through `FlowRecords`, ``write_log``,
``determine_best_metric`` and ``_step_metric_scheduler``.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from hf_lightning import lightning_internals as internals
from hf_lightning.modules.records import ReportsEvaluations
from hf_lightning.settings import CheckpointSettings, FlowSettings


class FlowEvaluation:
    """The validation hooks of `HFFlow` and its ``_evaluate``."""

    settings: FlowSettings
    checkpoint_settings: CheckpointSettings
    control: Any
    handler: Any
    control_validation: bool
    last_eval_metrics: dict[str, float]
    evaluate_override: Any
    #: the HF-style Trainer's error for an evaluation without an evaluation set (None: the data module decides)
    no_eval_data: str | None = None
    _validations: int
    _sets_written: int = 0
    #: the global step after which the last evaluation of the fit ran (None: none ran)
    evaluated_at_step: int | None = None

    def _evaluate(self, trainer: L.Trainer) -> dict[str, float]:
        """Runs Lightning's validation loop now (the steps its epoch loop takes to validate inside an epoch); with an
        overridden ``Trainer.evaluate``, calls it instead, as transformers' ``_evaluate`` does (the override's
        ``super().evaluate()`` evaluates, logs its record and calls ``on_evaluate``); its returned metrics are the
        ones the best model and a metric-stepped schedule are chosen by."""
        self.evaluated_at_step = self.state.global_step  # the step whose end evaluated last
        if self.evaluate_override is not None:
            metrics = self.evaluate_override()
            self.last_eval_metrics = metrics
            self._validations += 1
            return metrics
        if self.no_eval_data is not None:  # an evaluation asked for (a callback's should_evaluate) with no eval set
            raise ValueError(self.no_eval_data)
        before = self._validations
        # An HF-style Trainer whose get_eval_dataloader is overridden is asked for the loaders at each evaluation (the
        # first uses those Lightning asked for as the fit began).
        fresh = before > 0 and getattr(trainer.datamodule, "eval_loaders_per_evaluation", False)
        internals.validate_now(trainer, fresh)
        if self._validations == before and sum(trainer.num_val_batches) == 0 < len(trainer.num_val_batches) \
                and callable(getattr(trainer.lightning_module, "finish_empty_pass", None)):
            # Evaluation sets without a batch (empty, or drop_last with fewer samples than a batch): Lightning ran no
            # pass; transformers still evaluates them (speed metrics only), logs and calls on_evaluate.
            trainer.lightning_module.finish_empty_pass("validate")
            self._sets_written = 0
            self.on_validation_end(trainer, trainer.lightning_module)
        if self._validations == before:
            strategy = self.settings.eval_strategy
            raise ValueError(f"eval_strategy='{strategy}' (or eval_on_start) needs an evaluation set, but Lightning "
                             "ran no validation batch: give the data module a validation split, or eval_strategy='no'.")
        return self.last_eval_metrics

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.state.fn == "fit":
            self.event("on_prediction_step")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sets_written = 0
        loaders = trainer.val_dataloaders  # callbacks see the loader of the set being evaluated, as in transformers
        self.handler.eval_dataloader = next(iter(loaders.values())) if isinstance(loaders, dict) and loaders \
            else loaders

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        """A dict of evaluation sets: as transformers evaluates one set after the other, each set's record and
        on_evaluate come when it is done, before the next set's prediction steps."""
        if dataloader_idx == 0 or trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        finish = getattr(pl_module, "finish_sets_before", None)
        done = finish(dataloader_idx) if callable(finish) else []
        for set_metrics in done:
            self._write_set(set_metrics, trainer)
        loaders = trainer.val_dataloaders
        if done and isinstance(loaders, dict):
            self.handler.eval_dataloader = list(loaders.values())[dataloader_idx]

    def _write_set(self, set_metrics: dict[str, float], trainer: L.Trainer) -> None:
        self.write_log(set_metrics, trainer)
        self.event("on_evaluate", metrics=set_metrics)
        self._sets_written += 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        metrics: dict[str, float] = {}
        # As HF's `evaluate`: per evaluation set (one, or each of a dict of sets) a log record and on_evaluate (those
        # of the sets before the last already written as the next began); the metrics passed on gain `epoch`; the
        # best metric is then chosen from all sets' metrics together.
        sets = pl_module.eval_record.per_set if isinstance(pl_module, ReportsEvaluations) else [{}]
        for set_metrics in sets[self._sets_written:]:
            self._write_set(set_metrics, trainer)
        for set_metrics in sets:
            metrics.update(set_metrics)
        self.last_eval_metrics = metrics
        self._validations += 1
        if not self.control_validation:  # Lightning's schedule: track the best here (else `_log_evaluate_save` does)
            self._step_metric_scheduler(pl_module, metrics)
            is_new_best = self.determine_best_metric(metrics)
            if self.checkpoint_settings.save_strategy == "best":
                self.control.should_save = is_new_best
