"""Causal and masked language modelling: `LanguageModelingModule`, which adds ``eval_perplexity``."""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import nn
from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

from hf_lightning.modules.base import HFModule

_LM_TASKS = ("causal-lm", "masked-lm")


def hf_loss_shifts_labels(model: nn.Module) -> bool:
    """``transformers.Trainer``'s rule for counting ``num_items_in_batch`` over ``labels[..., 1:]``.

    Only when the model's ``loss_type`` maps to ``ForCausalLMLoss`` in ``LOSS_MAPPING`` (Llama, Qwen, Mistral...) and it
    is not an encoder-decoder. Models whose class name gives no ``loss_type`` (GPT-2's ``GPT2LMHeadModel``, BERT's
    ``BertLMHeadModel``) fall back to ``ForCausalLMLoss`` for the loss but are counted over all labels by HF.
    """
    config = getattr(model, "config", None)
    return LOSS_MAPPING.get(getattr(model, "loss_type", None)) is ForCausalLMLoss and not getattr(
        config, "is_encoder_decoder", False)


def perplexity(loss: float) -> float:
    """``exp(loss)``, or ``inf`` on overflow (HF's ``run_clm.py`` / ``run_mlm.py``)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


class LanguageModelingModule(HFModule):
    """An ``AutoModelForCausalLM`` or ``AutoModelForMaskedLM`` model; evaluation adds ``eval_perplexity``.

    Pair it with `hf_lightning.data.tasks.LanguageModelingDataModule` (``mlm`` must match ``task``). For causal LM the
    gradient-accumulation item count is taken over the shifted labels (``labels[..., 1:]``), as ``transformers.Trainer``.
    All `HFModule` arguments apply.

    Args:
        task: ``causal-lm`` (next-token prediction) or ``masked-lm`` (BERT-style masked tokens).
        **kwargs: `HFModule` arguments (``model``, ``tokenizer``, ``learning_rate``...).
    """

    def __init__(self, task: Literal["causal-lm", "masked-lm"] = "causal-lm", **kwargs: Any) -> None:
        if task not in _LM_TASKS:
            raise ValueError(f"model.task='{task}': LanguageModelingModule trains 'causal-lm' or 'masked-lm'.")
        super().__init__(task=task, **kwargs)
        self.loss_shifts_labels = hf_loss_shifts_labels(self.model)  # read by the data path's item count

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
