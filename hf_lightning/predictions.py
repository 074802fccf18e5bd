"""What ``python -m hf_lightning predict`` writes beside its metrics, as transformers' example scripts do.

- ``predictions.npz``: every array of the `PredictionOutput` (``predictions``, ``label_ids``; a tuple of outputs as
  ``predictions_0``, ``predictions_1``, ...), loadable with ``numpy.load``.
- ``predictions.txt`` for sequence classification: ``index<TAB>prediction``, the label name of the arg-max (its value
  with three decimals for a regression), as ``run_glue.py`` writes it; for token classification with labels: one line
  per example, the predicted label names of the labelled tokens, as ``run_ner.py`` writes it.
- ``generated_predictions.txt`` for a seq2seq model predicting with ``generate``: one decoded text per line, as
  ``run_summarization.py`` writes it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

IGNORED = -100  # transformers' ignored label / generation padding


def _arrays(name: str, value: Any) -> dict[str, np.ndarray]:
    """``value``'s arrays by name: a tuple or list of outputs gives ``name_0``, ``name_1``, ... (nested likewise)."""
    if value is None:
        return {}
    if isinstance(value, (tuple, list)):
        out: dict[str, np.ndarray] = {}
        for i, item in enumerate(value):
            out.update(_arrays(f"{name}_{i}", item))
        return out
    return {name: np.asarray(value)}


def _label_name(config: Any, index: int) -> str:
    """The label's name, as ``run_glue.py`` writes it: the data's own label value where the data set names none
    (transformers' placeholder names ``LABEL_<i>`` stand for the values 0, 1, ...)."""
    names = getattr(config, "id2label", None) or {}
    name = str(names.get(index, names.get(str(index), index)))
    return str(index) if name == f"LABEL_{index}" else name


def prediction_lines(module: Any, output: Any) -> tuple[str, list[str]] | None:
    """The text file to write for ``module``'s task (its name and lines), or None where the task has none."""
    preds, labels = output.predictions, output.label_ids
    config = getattr(module.model, "config", None)
    if getattr(module, "predict_with_generate", False) and isinstance(preds, np.ndarray):
        tokenizer = module.tokenizer_to_save
        if tokenizer is None:
            return None
        ids = np.where(preds != IGNORED, preds, tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
        return "generated_predictions.txt", [text.strip() for text in texts]
    if not isinstance(preds, np.ndarray):
        return None
    if module.task == "sequence-classification" and preds.ndim == 2:
        problem = getattr(config, "problem_type", None)
        if problem == "multi_label_classification":
            return None
        if problem == "regression" or preds.shape[-1] == 1:
            return "predictions.txt", ["index\tprediction", *(f"{i}\t{v:3.3f}" for i, v in enumerate(preds[:, 0]))]
        return "predictions.txt", ["index\tprediction",
                                   *(f"{i}\t{_label_name(config, int(c))}" for i, c in enumerate(preds.argmax(-1)))]
    if module.task == "token-classification" and preds.ndim == 3 and isinstance(labels, np.ndarray):
        chosen = preds.argmax(-1)
        return "predictions.txt", [" ".join(_label_name(config, int(c)) for c, gold in zip(row, gold_row)
                                            if gold != IGNORED) for row, gold_row in zip(chosen, labels)]
    return None


def write_predictions(folder: str, module: Any, output: Any) -> list[str]:
    """Writes ``predictions.npz`` and the task's text file into ``folder``; returns the paths written."""
    os.makedirs(folder, exist_ok=True)
    written = []
    arrays = {**_arrays("predictions", output.predictions), **_arrays("label_ids", output.label_ids)}
    if arrays:
        path = os.path.join(folder, "predictions.npz")
        np.savez(path, **arrays)
        written.append(path)
    text = prediction_lines(module, output)
    if text is not None:
        path = os.path.join(folder, text[0])
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(text[1]) + "\n")
        written.append(path)
    return written
