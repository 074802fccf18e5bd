"""Optimizers and schedules, built by transformers' own factories so the HF names mean the same thing.

- the optimizer class and kwargs for an ``optim`` name come from ``transformers.Trainer.get_optimizer_cls_and_kwargs``
  (adamw_torch, adamw_torch_fused, adafactor, sgd, ...), with HF's two parameter groups: decayed weights, and biases /
  norm layers at weight decay 0 (``Trainer.get_decay_parameter_names``);
- any ``torch.optim`` class (or a LightningCLI ``class_path``) can replace it, keeping the same groups;
- the schedule is ``transformers.get_scheduler`` (every ``SchedulerType``), stepped once per optimizer step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import transformers
from torch import nn
from transformers.trainer import Trainer as HFTrainer
from transformers.trainer_optimizer import is_optimizer_factory
from transformers.training_args import TrainingArguments as HFTrainingArguments

from hf_lightning.settings import unknown_name

#: A callable that builds an optimizer from parameter groups (what LightningCLI makes of ``class_path`` + init_args).
OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]

_HF_ARG_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(HFTrainingArguments) if f.default is not dataclasses.MISSING
}


class _ArgsView:
    """The few TrainingArguments fields transformers' optimizer factory reads; HF defaults for the rest.

    Building a full ``transformers.TrainingArguments`` touches accelerate's device state, which a LightningModule
    must not do, so the factory gets this read-only view instead.
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __getattr__(self, name: str) -> Any:
        if name in _HF_ARG_DEFAULTS:
            return _HF_ARG_DEFAULTS[name]
        raise AttributeError(name)


def decay_parameter_groups(model: nn.Module, weight_decay: float,
                           decay_names: list[str] | None = None) -> list[dict[str, Any]]:
    """HF's two parameter groups: decayed weights, then biases and norm-layer weights at weight decay 0.
    ``decay_names``: the parameters to decay, where not transformers' rule (an overridden
    ``Trainer.get_decay_parameter_names``)."""
    # Reuses transformers' rule (LayerNorm modules and bias/norm name patterns); it does not read `self`.
    decay = set(HFTrainer.get_decay_parameter_names(None, model) if decay_names is None else decay_names)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    *,
    optim: str = "adamw_torch_fused",
    learning_rate: float = 5e-5,
    weight_decay: float = 0.0,
    adam_beta1: float = 0.9,
    adam_beta2: float = 0.999,
    adam_epsilon: float = 1e-8,
    optim_args: str | None = None,
    optim_target_modules: Any = None,
    optimizer_factory: OptimizerFactory | None = None,
    optimizer_cls_and_kwargs: tuple[type, dict[str, Any]] | None = None,
    decay_names: list[str] | None = None,
    warmup_steps: float = 0,
) -> torch.optim.Optimizer:
    """Builds the optimizer over HF's decay / no-decay groups.

    Args:
        model: The model whose trainable parameters are optimised.
        optim: A transformers optimizer name (``transformers.training_args.OptimizerNames``).
        learning_rate: Peak learning rate.
        weight_decay: Weight decay of the decayed group (biases and norms get 0).
        adam_beta1: Adam beta1.
        adam_beta2: Adam beta2.
        adam_epsilon: Adam epsilon.
        optim_args: Extra ``key=value,key=value`` optimizer arguments, as in TrainingArguments.
        optim_target_modules: Target modules of GaLore-style optimizers.
        optimizer_factory: Replaces ``optim``: called with the parameter groups (e.g. ``functools.partial(torch.optim.SGD,
            lr=0.1)`` or a LightningCLI ``class_path``). Group weight decays are kept.
        optimizer_cls_and_kwargs: Replaces ``optim``, as ``Trainer(optimizer_cls_and_kwargs=...)``.
        decay_names: The parameters weight decay applies to, where not transformers' rule.
        warmup_steps: The warmup (schedule-free optimizers warm up themselves).

    As transformers' ``create_optimizer``: an optimizer factory (Muon, Dion) is called with the model; the
    parameters that transformers' factory prepares (GaLore / APOLLO target groups) replace the decay groups.
    """
    groups = decay_parameter_groups(model, weight_decay, decay_names)
    if optimizer_factory is not None:
        return optimizer_factory(groups)
    if optimizer_cls_and_kwargs is None:
        view = _ArgsView(
            optim=optim,
            optim_args=optim_args,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            adam_beta1=adam_beta1,
            adam_beta2=adam_beta2,
            adam_epsilon=adam_epsilon,
            optim_target_modules=optim_target_modules,
            warmup_steps=warmup_steps,
        )
        # the name is checked when the settings are built; a missing package is reported by transformers
        optimizer_cls_and_kwargs = HFTrainer.get_optimizer_cls_and_kwargs(view, model)
    cls, kwargs = optimizer_cls_and_kwargs
    if is_optimizer_factory(cls):
        return cls()(model, **kwargs)
    kwargs, params = dict(kwargs), groups
    for prepared in ("params", "model", "optimizer_dict"):  # as transformers: what its factory prepared wins
        if prepared in kwargs:
            params = kwargs.pop(prepared)
    return cls(params, **kwargs)


def resolve_warmup_steps(warmup_steps: float, num_training_steps: int) -> int:
    """HF's rule: a value >= 1 is a step count (its integer part); a float in (0, 1) is a ratio,
    ``ceil(max_steps * ratio)``."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0 (a count, or a float < 1 for a ratio).")
    if 0 < warmup_steps < 1:
        return math.ceil(num_training_steps * warmup_steps)
    return int(warmup_steps)  # 2.5 -> 2, as TrainingArguments.get_warmup_steps


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    lr_scheduler_type: str = "linear",
    num_training_steps: int,
    warmup_steps: float = 0,
    lr_scheduler_kwargs: dict[str, Any] | None = None,
) -> torch.optim.lr_scheduler.LRScheduler:
    """``transformers.get_scheduler`` with HF's warmup rule; raises a clear error for an unknown type."""
    known = [s.value for s in transformers.SchedulerType]
    if lr_scheduler_type not in known:  # the settings check it first; a direct call is checked here
        raise ValueError(unknown_name("lr_scheduler_type", lr_scheduler_type, known))
    return transformers.get_scheduler(
        lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=resolve_warmup_steps(warmup_steps, num_training_steps),
        num_training_steps=num_training_steps,
        scheduler_specific_kwargs=lr_scheduler_kwargs or {},
    )


def steps_on_metric(scheduler: Any) -> bool:
    """Whether a schedule steps on an evaluation metric after each evaluation (``ReduceLROnPlateau``, transformers'
    ``GreedyLR``) rather than once per optimizer step."""
    from transformers.optimization import GreedyLR

    return isinstance(scheduler, (torch.optim.lr_scheduler.ReduceLROnPlateau, GreedyLR))


def trainer_scheduler(trainer: Any) -> Any:
    """The learning-rate scheduler of a fit: the one Lightning steps, or the module's metric-driven one."""
    configs = trainer.lr_scheduler_configs
    if configs:
        return configs[0].scheduler
    return getattr(trainer.lightning_module, "metric_scheduler", None)
