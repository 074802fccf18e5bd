"""Knowledge distillation: a student `HFModule` trained toward a frozen teacher's softened outputs.

Only ``compute_loss`` changes (the HF recipe: a ``Trainer`` subclass overriding ``compute_loss``): the student's own
loss comes from `HFModule.compute_loss`, the teacher runs without gradients on the same inputs, and
`hf_lightning.losses.DistillationLoss` mixes the two (``alpha * T^2 * KL + (1 - alpha) * hard``). Because both terms
take the same ``num_items_in_batch``, the base class' gradient-accumulation normalisation (``_normalise`` and its probe)
applies unchanged.

The teacher is deliberately *not* a registered submodule: it never appears in ``state_dict()``, Lightning checkpoints,
HF checkpoint folders, ``save_pretrained`` exports or the optimizer, and ``module.train()`` leaves it in eval mode. It
follows the student through ``.to(device)`` / ``.to(dtype)`` (this module's ``_apply``), so Lightning's device placement
and "true" precisions (``bf16-true``...) reach it; under mixed precision its forward runs in the same autocast region
as the student's. Under DDP / FSDP / DeepSpeed every rank holds a full teacher replica.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from hf_lightning.losses import DistillationLoss
from hf_lightning.modules.base import HFModule
from hf_lightning.modules.loading import load_model


def _student_logits(outputs: Any, has_loss: bool) -> torch.Tensor:
    """The logits of a model output: ``outputs["logits"]``, or HF's tuple convention (``(loss, logits, ...)``)."""
    if isinstance(outputs, Mapping):
        if "logits" not in outputs:
            raise ValueError(f"The model output has no 'logits' (keys: {list(outputs)}); DistillationModule compares "
                             "logits: override DistillationModule.compute_loss for other outputs.")
        return outputs["logits"]
    return outputs[1] if has_loss else outputs[0]


class DistillationModule(HFModule):
    """Trains the student ``model`` on ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * student_loss``.

    Args:
        teacher: The teacher: a fine-tuned model folder, a packaged model name, a config dict (random weights: only for
            tests), or (from Python) a model instance. It is loaded with the student's ``task``, ``num_labels`` and
            ``id2label``, frozen and kept in eval mode, and its logits must have the student's shape.
        alpha: Weight of the soft (teacher) term in [0, 1]; the student's own loss gets ``1 - alpha``.
        temperature: Softening temperature T > 0; the soft term is scaled by ``T^2`` (Hinton et al. 2015).
        teacher_model_kwargs: Extra ``from_pretrained`` keyword arguments of the teacher (``torch_dtype``,
            ``attn_implementation``...).
        **kwargs: `HFModule` arguments of the student (``model``, ``task``, ``optimization``...).

    The evaluation loss is the same mixed loss (``prediction_step`` calls ``compute_loss``, as transformers.Trainer).
    """

    def __init__(
        self,
        teacher: str | dict[str, Any] | nn.Module,
        alpha: float = 0.5,
        temperature: float = 2.0,
        teacher_model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= alpha <= 1.0 or temperature <= 0:
            raise ValueError(f"model.alpha={alpha} must be in [0, 1] and model.temperature={temperature} > 0.")
        self.alpha = alpha
        self.temperature = temperature
        teacher_model = load_model(teacher, self.task, kwargs.get("num_labels"), kwargs.get("id2label"),
                                    dict(teacher_model_kwargs or {}), from_config=False)
        teacher_model.eval().requires_grad_(False)
        # object.__setattr__ bypasses nn.Module's registration: the teacher stays out of state_dict / parameters().
        object.__setattr__(self, "_teacher", teacher_model)
        self.distillation_loss = DistillationLoss(temperature=temperature, alpha=alpha,
                                                  shift_labels=self.loss_shifts_labels)

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher model (not part of this module's state)."""
        return self._teacher

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> DistillationModule:
        # .to(device) / .to(dtype) / .cuda() / .half() all go through nn.Module._apply: move the teacher along.
        super()._apply(fn, recurse)
        teacher = self.__dict__.get("_teacher")
        if teacher is not None:
            teacher._apply(fn, recurse)
        return self

    def on_train_start(self) -> None:
        super().on_train_start()
        self.teacher.eval()  # in case user code switched it: dropout would make its targets noisy

    def teacher_logits(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The teacher's logits for a batch (labels removed, no gradients)."""
        teacher_inputs = {k: v for k, v in inputs.items() if k not in self.label_names and k != "num_items_in_batch"}
        with torch.no_grad():
            outputs = self.teacher(**teacher_inputs)
        return _student_logits(outputs, has_loss=False)

    def autocast_models(self, training: bool = False) -> list[nn.Module]:
        """The student and the teacher: both forwards under mixed precision's autocast, outputs in float32."""
        return [self.model, self.teacher]

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The student's HF loss (`HFModule.compute_loss`) mixed with the distillation term."""
        labels = next((inputs[n] for n in ("labels", *self.label_names) if inputs.get(n) is not None), None)
        hard, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        student = _student_logits(outputs, has_loss=labels is not None)
        mask_labels = labels if torch.is_tensor(labels) and labels.shape == student.shape[:-1] else None
        loss = self.distillation_loss(student, self.teacher_logits(inputs), labels=mask_labels, hard_loss=hard,
                                      num_items_in_batch=num_items_in_batch)
        return (loss, outputs) if return_outputs else loss


__all__ = ["DistillationModule"]
