"""Causal and masked language modelling: `LanguageModelingModule`, which adds ``eval_perplexity``."""

from __future__ import annotations

import math
from typing import Any, Literal

from hf_lightning.modules.base import HFModule

_LM_TASKS = ("causal-lm", "masked-lm")


def perplexity(loss: float) -> float:
    """``exp(loss)``, or ``inf`` on overflow (HF's ``run_clm.py`` / ``run_mlm.py``)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


class LanguageModelingModule(HFModule):
    """An ``AutoModelForCausalLM`` or ``AutoModelForMaskedLM`` model; evaluation adds ``eval_perplexity``.

    Pair it with `hf_lightning.data.tasks.LanguageModelingDataModule` (``mlm`` must match ``task``). For causal LM the
    gradient-accumulation item count is taken over the shifted labels (``labels[..., 1:]``), the tokens the loss
    predicts: as ``transformers.Trainer`` for models with a ``ForCausalLM`` ``loss_type`` (Llama, Qwen...), and also
    for causal LMs without one (GPT-2), which transformers counts one token per sequence too many (docs/parity.md).
    All `HFModule` arguments apply.

    Args:
        task: ``causal-lm`` (next-token prediction) or ``masked-lm`` (BERT-style masked tokens).
        **kwargs: `HFModule` arguments (``model``, ``tokenizer``, ``optimization``...).
    """

    def __init__(self, task: Literal["causal-lm", "masked-lm"] = "causal-lm", **kwargs: Any) -> None:
        if task not in _LM_TASKS:
            raise ValueError(f"model.task='{task}': LanguageModelingModule trains 'causal-lm' or 'masked-lm'.")
        super().__init__(task=task, **kwargs)

    def setup(self, stage: str) -> None:
        """Checks that the data module's ``mlm`` flag matches ``task`` (a masked model on causal data learns nothing)."""
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        mlm = getattr(datamodule, "mlm", None)
        if mlm is not None and mlm != (self.task == "masked-lm"):
            raise ValueError(f"data.mlm={mlm} does not match model.task='{self.task}': set data.mlm="
                             f"{str(self.task == 'masked-lm').lower()} or model.task="
                             f"{'masked-lm' if mlm else 'causal-lm'}.")

    def _finish(self) -> dict[str, float]:
        results = super()._finish()
        prefix = self.metric_key_prefix[self._stage_name()]
        if f"{prefix}_loss" in results:
            results[f"{prefix}_perplexity"] = perplexity(results[f"{prefix}_loss"])
        return results
