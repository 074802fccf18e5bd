"""Task names -> the transformers auto class that loads the model, and how the task's loss treats labels."""

from __future__ import annotations

from dataclasses import dataclass

import transformers


@dataclass(frozen=True)
class Task:
    """How a task loads its model and counts its loss items."""

    auto_class: str  # name of a transformers.AutoModelFor... class
    uses_labels: bool = True  # the head is sized by num_labels / id2label
    shifts_labels: bool = False  # causal LM: the loss predicts labels[..., 1:]


TASKS: dict[str, Task] = {
    "sequence-classification": Task("AutoModelForSequenceClassification"),
    "token-classification": Task("AutoModelForTokenClassification"),
    "question-answering": Task("AutoModelForQuestionAnswering", uses_labels=False),
    "causal-lm": Task("AutoModelForCausalLM", uses_labels=False, shifts_labels=True),
    "masked-lm": Task("AutoModelForMaskedLM", uses_labels=False),
    "seq2seq-lm": Task("AutoModelForSeq2SeqLM", uses_labels=False),
    "feature-extraction": Task("AutoModel", uses_labels=False),
}


def auto_class(task: str) -> type:
    """The ``transformers`` auto class of a task name."""
    if task not in TASKS:
        raise ValueError(f"Unknown task '{task}'. Choose one of {sorted(TASKS)}.")
    return getattr(transformers, TASKS[task].auto_class)
