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
    """transformers.Trainer's test for shifting labels in label smoothing: a causal-LM model class."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return type(model).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()


#: Keys of a warm-started encoder-decoder spec besides ``encoder`` / ``decoder``: set on the model's config.
_ENCODER_DECODER_TOKENS = ("decoder_start_token_id", "eos_token_id", "pad_token_id")


def is_encoder_decoder_spec(model: object) -> bool:
    """Whether a ``model`` value is ``{encoder: ..., decoder: ...}`` (a `build_encoder_decoder` spec)."""
    return isinstance(model, dict) and "encoder" in model and "decoder" in model


def build_encoder_decoder(spec: dict, model_kwargs: dict | None = None) -> transformers.EncoderDecoderModel:
    """A ``transformers.EncoderDecoderModel`` from ``{encoder: ..., decoder: ..., <token ids>}`` (HF's BERT2BERT).

    Each side is a model folder / packaged name (pre-trained weights: warm start) or a config dict (random init). The
    decoder side is loaded as a causal LM with ``is_decoder`` and ``add_cross_attention`` (its cross-attention starts
    untrained, as in HF's warm-starting recipe). ``decoder_start_token_id``, ``eos_token_id`` and ``pad_token_id`` go on
    the model's config: the loss needs the first and last to shift the labels into decoder inputs.

    Args:
        spec: ``encoder``, ``decoder`` and optionally the three token ids (and ``tie_encoder_decoder``).
        model_kwargs: Extra ``from_pretrained`` / ``from_config`` keyword arguments of both sides.
    """
    from hf_lightning.data.builtin import resolve_model_path

    spec = dict(spec)
    unknown = sorted(set(spec) - {"encoder", "decoder", "tie_encoder_decoder", *_ENCODER_DECODER_TOKENS})
    if unknown:
        raise ValueError(f"model {unknown}: an encoder-decoder spec takes encoder, decoder, tie_encoder_decoder and "
                         f"{', '.join(_ENCODER_DECODER_TOKENS)}.")
    kwargs = dict(model_kwargs or {})

    def side(value: object, auto: type, **extra: object) -> transformers.PreTrainedModel:
        if isinstance(value, dict):
            config = dict(value)
            return auto.from_config(transformers.AutoConfig.for_model(config.pop("model_type"), **config, **extra),
                                    **kwargs)
        return auto.from_pretrained(resolve_model_path(str(value)), **extra, **kwargs)

    encoder = side(spec["encoder"], transformers.AutoModel)
    decoder = side(spec["decoder"], transformers.AutoModelForCausalLM, is_decoder=True, add_cross_attention=True)
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        encoder.config, decoder.config, tie_encoder_decoder=bool(spec.get("tie_encoder_decoder", False)))
    model = transformers.EncoderDecoderModel(config=config, encoder=encoder, decoder=decoder)
    for name in _ENCODER_DECODER_TOKENS:
        if spec.get(name) is not None:
            setattr(model.config, name, int(spec[name]))
            setattr(model.generation_config, name, int(spec[name]))
    return model
