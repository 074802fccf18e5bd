"""``Seq2SeqTrainer``: the HF-style Trainer whose evaluation and prediction can generate, as transformers'."""

from __future__ import annotations

import inspect
from typing import Any

from transformers import Seq2SeqTrainer as HFSeq2SeqTrainer
from transformers.trainer_utils import PredictionOutput

from hf_lightning.facade import FacadeModule
from hf_lightning.modules.base import HFModule
from hf_lightning.modules.seq2seq import Seq2SeqModule
from hf_lightning.trainer import Trainer


class FacadeSeq2SeqModule(FacadeModule, Seq2SeqModule):
    """FacadeModule whose default ``prediction_step`` is `Seq2SeqModule`'s (``generate`` when asked)."""


class Seq2SeqTrainer(Trainer):
    """``transformers.Seq2SeqTrainer``'s interface: ``predict_with_generate``, ``generation_max_length``,
    ``generation_num_beams``, ``generation_config`` from `Seq2SeqTrainingArguments`, and ``**gen_kwargs`` on
    `evaluate` / `predict`. Metrics come from ``compute_metrics`` (on generated ids), as in transformers.
    """

    module_class = FacadeSeq2SeqModule
    load_generation_config = staticmethod(HFSeq2SeqTrainer.load_generation_config)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # As transformers: args.generation_config replaces the model's now (validated strictly; a model that
        # model_init builds later keeps its own)
        if self.args.generation_config is not None and self.model is not None:
            self.model.generation_config = self.load_generation_config(self.args.generation_config)

    def _module_kwargs(self) -> dict[str, Any]:
        accepted = set(inspect.signature(HFModule.__init__).parameters)
        accepted |= set(inspect.signature(Seq2SeqModule.__init__).parameters)
        accepted.discard("generation_config")  # applied to the model when the Trainer was built
        kwargs = {k: v for k, v in self.translated.module.items() if k in accepted}
        kwargs["task"] = "seq2seq-lm"
        kwargs["label_names"] = self.label_names  # transformers' find_labels, or args.label_names
        kwargs["rouge"] = False  # transformers computes no metric of its own; compute_metrics does
        return kwargs

    def _with_gen_kwargs(self, gen_kwargs: dict[str, Any]) -> None:
        self._refresh_arguments()  # first: a module built again for changed arguments gets the keywords too
        module = self._evaluation_module()
        module.gen_kwargs = module._default_gen_kwargs(
            dict(gen_kwargs), self.args.generation_max_length, self.args.generation_num_beams)

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None, **gen_kwargs: Any) -> tuple[Any, Any, Any]:
        """``Seq2SeqTrainer.prediction_step``: generates with ``predict_with_generate`` (``gen_kwargs`` given here,
        else those of the running ``evaluate`` / ``predict``); an override's ``super()`` call lands here."""
        return Seq2SeqModule.prediction_step(self._evaluation_module(), model, inputs, prediction_loss_only,
                                             ignore_keys=ignore_keys, **gen_kwargs)

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval", **gen_kwargs: Any) -> dict[str, float]:
        self._with_gen_kwargs(gen_kwargs)
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def predict(self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test",
                **gen_kwargs: Any) -> PredictionOutput:
        self._with_gen_kwargs(gen_kwargs)
        return super().predict(test_dataset, ignore_keys, metric_key_prefix)
