"""LoRA fine-tuning through the ``peft`` library (optional extra: ``pip install 'hf_lightning[peft]'``).

`apply_lora` wraps a transformers model with ``peft.get_peft_model`` (only the low-rank adapters, plus the task head
for classification tasks, stay trainable); `LoraModule` is an `HFModule` that does so at construction and whose
``save_pretrained`` writes the adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) that
``peft.PeftModel.from_pretrained(base_model, path)`` loads.

HF checkpoint folders (`hf_lightning.callbacks.HFCheckpoint`) of a ``PeftModel`` are adapter folders, as
transformers.Trainer writes them (``PeftModel.save_pretrained``: an adapter not named ``default`` in a sub-folder of
its name); a resume loads each adapter back and the best model is loaded with ``model.load_adapter``, as transformers
does (`hf_lightning.checkpoint.resume`); see docs/advanced.md.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from hf_lightning.modules.base import HFModule

#: HFModule task -> peft TaskType (sets the head peft keeps trainable: ``classifier`` / ``score`` / ``qa_outputs``).
PEFT_TASK_TYPES: dict[str, str | None] = {
    "sequence-classification": "SEQ_CLS",
    "token-classification": "TOKEN_CLS",
    "causal-lm": "CAUSAL_LM",
    "seq2seq-lm": "SEQ_2_SEQ_LM",
    "question-answering": "QUESTION_ANS",
    "masked-lm": None,  # no peft task type: the MLM head is tied to the frozen embeddings
}


def require_peft() -> Any:
    """Imports ``peft`` or raises an ImportError saying how to install it."""
    try:
        import peft
    except ImportError as err:
        raise ImportError("LoRA needs the peft library: pip install 'hf_lightning[peft]' (or pip install peft).") from err
    return peft


def apply_lora(
    model: nn.Module,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: list[str] | str | None = None,
    task_type: str | None = None,
    modules_to_save: list[str] | None = None,
    bias: str = "none",
) -> nn.Module:
    """Wraps ``model`` with LoRA adapters (``peft.LoraConfig`` + ``peft.get_peft_model``).

    Args:
        model: A transformers model.
        r: Rank of the adapters.
        alpha: LoRA scaling numerator (the update is scaled by ``alpha / r``).
        dropout: Dropout on the adapters' input.
        target_modules: Names (or a regex) of the linear layers to adapt; None uses peft's default for the model type
            (``query`` / ``value`` for BERT, ``c_attn`` for GPT-2, ``q`` / ``v`` for T5...); ``all-linear`` adapts all.
        task_type: A ``peft.TaskType`` name (``SEQ_CLS``, ``TOKEN_CLS``, ``CAUSAL_LM``...); it keeps the task head trainable.
        modules_to_save: More modules trained in full and saved with the adapter.
        bias: Which biases train: ``none``, ``all`` or ``lora_only``.

    Returns:
        The ``peft.PeftModel``.
    """
    peft = require_peft()
    if r < 1 or not 0 <= dropout < 1:
        raise ValueError(f"lora_r={r} must be >= 1 and lora_dropout={dropout} in [0, 1).")
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                             task_type=task_type, modules_to_save=modules_to_save, bias=bias)
    try:
        return peft.get_peft_model(model, config)
    except ValueError as err:
        if target_modules is None:
            raise ValueError(f"peft has no default LoRA target modules for {type(model).__name__} ({err}); set "
                             "lora_target_modules (e.g. [q_proj, v_proj], or all-linear).") from err
        raise ValueError(f"lora_target_modules={target_modules!r} does not fit {type(model).__name__}: {err}") from err


def trainable_parameters_report(model: nn.Module) -> str:
    """``trainable params: N || all params: M || trainable%: P``, the line peft's ``print_trainable_parameters`` prints.

    Counts come from peft's ``get_nb_trainable_parameters`` when the model has it (it counts quantised weights right),
    else from ``requires_grad``.
    """
    if callable(getattr(model, "get_nb_trainable_parameters", None)):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        params = list(model.parameters())
        trainable, total = sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
    share = 100 * trainable / total if total else 0.0
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {share:.4f}"


class LoraModule(HFModule):
    """`HFModule` that fine-tunes LoRA adapters (peft) instead of the whole model.

    The model is loaded as usual, then wrapped by `apply_lora`; only the adapters (and, for classification / QA
    tasks, the task head) train. ``save_pretrained`` (and so the CLI's export after ``fit``) writes the adapter
    folder; ``save_pretrained(path, merged=True)`` writes a plain transformers model with the adapters merged in.

    Args:
        lora_r: Rank of the adapters.
        lora_alpha: LoRA scaling numerator (updates scaled by ``lora_alpha / lora_r``).
        lora_dropout: Dropout on the adapters' input.
        lora_target_modules: Linear layers to adapt (names, a regex, or ``all-linear``); None: peft's default for
            the model type.
        lora_modules_to_save: Extra modules trained in full and saved with the adapter.
        lora_bias: Which biases train: ``none``, ``all`` or ``lora_only``.
        **kwargs: `HFModule` arguments (``model``, ``task``, ``optimization``...). LoRA usually wants a higher
            learning rate than full fine-tuning (1e-4 to 1e-3).
    """

    def __init__(
        self,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        lora_target_modules: list[str] | str | None = None,
        lora_modules_to_save: list[str] | None = None,
        lora_bias: str = "none",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Activation checkpointing, switched on when the fit begins, makes the frozen embeddings' output require grad
        # itself (transformers' activation_checkpointing_enable), as checkpointed blocks need.
        self.model = apply_lora(self.model, lora_r, lora_alpha, lora_dropout, lora_target_modules,
                                PEFT_TASK_TYPES.get(self.task), lora_modules_to_save, lora_bias)
        self.trainable_report = trainable_parameters_report(self.model)

    @property
    def model_accepts_loss_kwargs(self) -> bool:
        """HF's test on the base model (transformers.Trainer unwraps a PeftModel before inspecting ``forward``)."""
        base = self.model.get_base_model()
        if hasattr(base, "accepts_loss_kwargs"):
            return bool(base.accepts_loss_kwargs)
        params = inspect.signature(base.forward).parameters.values()
        return any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)

    def on_fit_start(self) -> None:
        rank_zero_info(f"LoRA: {self.trainable_report}")

    def save_pretrained(self, path: str, safe_serialization: bool = True, merged: bool = False) -> None:
        """Writes the adapter folder (``PeftModel.save_pretrained``) and tokenizer, or with ``merged`` a full
        transformers model with the adapters folded into its weights (``merge_and_unload`` on a copy).
        With several processes call it on every rank: rank zero writes the weights gathered across ranks."""
        writes, weights = self.export_state()
        if not writes:
            return
        if merged:
            import copy

            with torch.no_grad():
                merged_model = copy.deepcopy(self.model)
                if weights is not None:
                    merged_model.load_state_dict(weights)
                merged_model.merge_and_unload().save_pretrained(path, safe_serialization=safe_serialization)
        else:
            self.model.save_pretrained(path, safe_serialization=safe_serialization, state_dict=weights)
        if self.tokenizer_to_save is not None:
            self.tokenizer_to_save.save_pretrained(path)


__all__ = ["PEFT_TASK_TYPES", "LoraModule", "apply_lora", "require_peft", "trainable_parameters_report"]
