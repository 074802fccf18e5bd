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


def loss_shifts_labels(model: object, task: str) -> bool:
    """Whether the model's loss predicts ``labels[..., 1:]``, so ``num_items_in_batch`` counts shifted labels.

    transformers.Trainer 5.x asks only whether ``model.loss_type`` maps to ``ForCausalLMLoss``; causal LMs whose
    ``loss_type`` is None (GPT-2 among them) still use ``ForCausalLMLoss`` (``PreTrainedModel.loss_function``'s
    default), so transformers over-counts their tokens by one per sequence. Here a causal-LM class with no
    ``loss_type`` counts as shifting too (see docs/parity.md).
    """
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return False
    if not hasattr(model, "loss_type"):
        return TASKS[task].shifts_labels
    loss_type = getattr(model, "loss_type", None)
    if loss_type is None:
        return is_causal_lm(model)
    return LOSS_MAPPING.get(loss_type) is ForCausalLMLoss


def is_causal_lm(model: object) -> bool:
    """transformers.Trainer's test for shifting labels in label smoothing: a causal-LM model class (a PEFT model's
    base model, as transformers looks through the adapter wrapper; a compiled model's original)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    from transformers.trainer_utils import unwrap_peft_model

    model = unwrap_peft_model(getattr(model, "_orig_mod", model))
    return type(model).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
