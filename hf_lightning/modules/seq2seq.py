"""Sequence-to-sequence (summarisation, translation): `Seq2SeqModule`, HF's ``Seq2SeqTrainer`` behaviour.

With ``predict_with_generate`` evaluation and prediction call ``model.generate`` (``generation_max_length``,
``generation_num_beams``, ``gen_kwargs``, the model's ``generation_config``); predictions are the generated ids, and
ROUGE-1 / 2 / L F-measures (x100, as HF's ``run_summarization.py``) and ``gen_len`` are computed on the decoded text by
torchmetrics' ``ROUGEScore`` (no stemming: it would need nltk).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torchmetrics
from transformers import GenerationConfig, Seq2SeqTrainer

from hf_lightning.modules.base import HFModule
from hf_lightning.strategies import generation_is_synced

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def load_generation_config(value: str | dict[str, Any] | GenerationConfig, current: GenerationConfig) -> GenerationConfig:
    """A path / hub id / ``GenerationConfig`` replaces the model's (``Seq2SeqTrainer.load_generation_config``, strict
    validation); a dict updates a copy of the model's current one."""
    if isinstance(value, dict):
        config = copy.deepcopy(current)
        unused = config.update(**value)
        if unused:
            raise ValueError(f"model.generation_config has unknown fields {sorted(unused)}; see "
                             "transformers.GenerationConfig for the valid ones.")
        config.validate(strict=True)
        return config
    return Seq2SeqTrainer.load_generation_config(value)


class Seq2SeqModule(HFModule):
    """An ``AutoModelForSeq2SeqLM`` (T5, BART, Marian...) with HF ``Seq2SeqTrainer``'s generation during evaluation.

    Pair it with `hf_lightning.data.tasks.Seq2SeqDataModule`. All `HFModule` arguments apply (``task`` is fixed to
    ``seq2seq-lm``).

    Args:
        predict_with_generate: Evaluate and predict with ``generate`` (predictions are token ids; ROUGE is computed)
            instead of teacher-forced logits. The loss is the teacher-forced loss either way.
        generation_max_length: ``max_length`` given to ``generate`` unless ``gen_kwargs`` sets ``max_length`` or
            ``max_new_tokens`` (HF ``generation_max_length``).
        generation_num_beams: ``num_beams`` given to ``generate`` unless ``gen_kwargs`` sets it.
        generation_config: Replaces the model's generation config: a folder / file / hub id of a
            ``generation_config.json`` (as HF); or a dict of fields updating the model's one
            (e.g. ``{decoder_start_token_id: 101, eos_token_id: 102, pad_token_id: 0}``).
        gen_kwargs: Extra ``generate`` arguments (``max_new_tokens``, ``no_repeat_ngram_size``, ``length_penalty``...).
        rouge: Compute ROUGE and ``gen_len`` on generated predictions (needs the tokenizer to decode).
        **kwargs: `HFModule` arguments (``model``, ``tokenizer``, ``optimization``, ``label_smoothing_factor``...).
    """

    def __init__(
        self,
        predict_with_generate: bool = False,
        generation_max_length: int | None = None,
        generation_num_beams: int | None = None,
        generation_config: str | dict[str, Any] | None = None,
        gen_kwargs: dict[str, Any] | None = None,
        rouge: bool = True,
        **kwargs: Any,
    ) -> None:
        task = kwargs.pop("task", "seq2seq-lm")
        if task != "seq2seq-lm":
            raise ValueError(f"Seq2SeqModule has task 'seq2seq-lm', not model.task='{task}'.")
        super().__init__(task=task, **kwargs)
        if generation_max_length is not None and generation_max_length < 1:
            raise ValueError(f"model.generation_max_length={generation_max_length} must be >= 1 (or null).")
        if generation_num_beams is not None and generation_num_beams < 1:
            raise ValueError(f"model.generation_num_beams={generation_num_beams} must be >= 1 (or null).")
        if generation_config is not None:
            self.model.generation_config = load_generation_config(generation_config, self.model.generation_config)
        self.predict_with_generate = predict_with_generate
        self.gen_kwargs = self._default_gen_kwargs(dict(gen_kwargs or {}), generation_max_length, generation_num_beams)
        self.rouge = rouge and predict_with_generate
        if self.rouge and self.tokenizer is None:
            raise ValueError("ROUGE decodes the generated ids: set model.tokenizer (e.g. minilm) or model.rouge=false.")
        # torchmetrics accumulates per-sentence scores on the device and syncs them across ranks.
        self.val_rouge = torchmetrics.text.ROUGEScore(rouge_keys=ROUGE_KEYS) if self.rouge else None
        self.test_rouge = torchmetrics.text.ROUGEScore(rouge_keys=ROUGE_KEYS) if self.rouge else None
        self.val_gen_len = torchmetrics.MeanMetric() if self.rouge else None
        self.test_gen_len = torchmetrics.MeanMetric() if self.rouge else None

    @staticmethod
    def _default_gen_kwargs(gen_kwargs: dict[str, Any], max_length: int | None, num_beams: int | None) -> dict[str, Any]:
        """``Seq2SeqTrainer.evaluate``'s rule: the legacy arguments fill in only what ``gen_kwargs`` leaves unset."""
        if gen_kwargs.get("max_length") is None and gen_kwargs.get("max_new_tokens") is None and max_length is not None:
            gen_kwargs["max_length"] = max_length
        if gen_kwargs.get("num_beams") is None and num_beams is not None:
            gen_kwargs["num_beams"] = num_beams
        return gen_kwargs

    # ----------------------------------------------------------------------------------------------- HF hook
    def prediction_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
        ignore_keys: list[str] | None = None, **gen_kwargs: Any,
    ) -> tuple[torch.Tensor | None, Any, Any]:
        """``Seq2SeqTrainer.prediction_step``: ``(loss, generated_ids, labels)`` when generating."""
        if not self.predict_with_generate or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        gen_kwargs = gen_kwargs or dict(self.gen_kwargs)
        for key in ("num_beams", "max_length"):
            if key in gen_kwargs and gen_kwargs[key] is None:
                gen_kwargs.pop(key)
        # Sharded weights: every rank must keep stepping generate until all are done (Seq2SeqTrainer's default).
        gen_kwargs.setdefault("synced_gpus", generation_is_synced(self._trainer))
        has_labels = "labels" in inputs
        generation_inputs = dict(inputs)
        # decoder_input_ids made from the labels by the collator would make generate continue them: drop them.
        if has_labels and "decoder_input_ids" in inputs and inputs["labels"].shape == inputs["decoder_input_ids"].shape:
            generation_inputs = {k: v for k, v in inputs.items() if k not in ("decoder_input_ids",
                                                                              "decoder_attention_mask")}
        generated = self.model.generate(**generation_inputs, **gen_kwargs)
        config = self.model.generation_config
        if config._from_model_config:  # as transformers' Seq2SeqTrainer (the saved generation_config)
            config._from_model_config = False
        config.update(**config._get_default_generation_params(), defaults_only=True)  # as Seq2SeqTrainer
        generated = self._pad_to_generation_length(generated, config)
        loss = None
        if has_labels:
            with torch.no_grad():
                outputs = model(**inputs)
            if self.label_smoother is not None:
                loss = self.label_smoother(outputs, inputs["labels"]).detach().mean()
            else:
                loss = (outputs["loss"] if isinstance(outputs, dict) else outputs[0]).detach().mean()
        labels = self._pad_to_generation_length(inputs["labels"], config) if has_labels else None
        return loss, generated, labels

    def _pad_to_generation_length(self, tensor: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
        """Right-pads with the pad (else EOS) id to ``max_length`` (or ``max_new_tokens + 1``), as Seq2SeqTrainer."""
        if tensor.shape[-1] < config.max_length:
            length = config.max_length
        elif config.max_new_tokens is not None and tensor.shape[-1] < config.max_new_tokens + 1:
            length = config.max_new_tokens + 1
        else:
            return tensor
        pad = self._pad_token_id()
        padded = torch.full((tensor.shape[0], length), pad, dtype=tensor.dtype, device=tensor.device)
        padded[:, : tensor.shape[-1]] = tensor
        return padded

    def _pad_token_id(self) -> int:
        tokenizer = self.tokenizer
        if tokenizer is not None and getattr(tokenizer, "pad_token_id", None) is not None:
            return tokenizer.pad_token_id
        if tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
            return tokenizer.eos_token_id
        pad = getattr(self.model.config, "pad_token_id", None)
        if pad is None:
            raise ValueError("Padding generated ids needs a pad token: set pad_token_id in the model config "
                             "(or model.generation_config) or give a tokenizer with one.")
        return pad

    # ----------------------------------------------------------------------------------------------- metrics
    def _rouge_metrics(self) -> tuple[Any, Any]:
        stage = self._stage_name()
        if not self.rouge or stage == "predict":
            return None, None
        return (self.test_rouge, self.test_gen_len) if stage == "test" else (self.val_rouge, self.val_gen_len)

    def _scores_predictions(self, stage: str) -> bool:
        return super()._scores_predictions(stage) or self._rouge_metrics()[0] is not None

    def _eval_step(self, batch: Any, dataloader_idx: int = 0) -> tuple[Any, Any, Any]:
        loss, generated, labels = super()._eval_step(batch, dataloader_idx)
        rouge, gen_len = self._rouge_metrics()
        if rouge is not None and torch.is_tensor(generated) and torch.is_tensor(labels):
            pad = self._pad_token_id()
            preds = torch.where(generated == -100, pad, generated)
            decoded = [s.strip() for s in self.tokenizer.batch_decode(preds, skip_special_tokens=True)]
            targets = [s.strip() for s in self.tokenizer.batch_decode(torch.where(labels == -100, pad, labels),
                                                                      skip_special_tokens=True)]
            rouge.update(decoded, targets)
            gen_len.update(preds.ne(pad).sum(-1).float())  # HF's example: non-pad tokens per prediction
        return loss, generated, labels

    def _hf_metrics(self, state: Any) -> dict[str, float]:
        results = super()._hf_metrics(state)
        rouge, gen_len = self._rouge_metrics()
        if rouge is not None and rouge.update_count > 0:
            scores = rouge.compute()
            ours = {key: float(scores[f"{key}_fmeasure"]) * 100 for key in ROUGE_KEYS}
            ours["gen_len"] = float(gen_len.compute())
            rouge.reset()
            gen_len.reset()
            results = {**ours, **results}  # a user's compute_metrics wins on a name clash
        return results
