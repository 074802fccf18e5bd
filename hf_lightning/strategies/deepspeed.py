"""DeepSpeed: ``deepspeed`` (a path or dict) -> `HFDeepSpeedStrategy`, its ``"auto"`` values filled by transformers."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy
from torch import nn


def deepspeed_config(args: Any, model: nn.Module | None = None, num_training_steps: int = 0,
                     inference: bool = False) -> dict[str, Any]:
    """The DeepSpeed config of ``args.deepspeed`` with every ``"auto"`` filled by transformers' own code.

    ``TrainingArguments`` already ran ``HfTrainerDeepSpeedConfig.trainer_config_process`` (batch sizes, accumulation,
    clipping, optimizer params, fp16 / bf16); ``trainer_config_finalize`` adds the model- and length-dependent values
    and raises on values that contradict the arguments. ``gradient_accumulation_steps`` is removed: Lightning sets it
    from ``accumulate_grad_batches`` (the same number).
    """
    hf_config = getattr(args, "hf_deepspeed_config", None)
    if hf_config is None:
        raise ValueError("deepspeed is set but TrainingArguments built no DeepSpeed config: install DeepSpeed "
                         "(pip install 'hf_lightning[deepspeed]') before creating the arguments.")
    hf_config = copy.deepcopy(hf_config)
    hf_config.trainer_config_finalize(args, model, num_training_steps)
    config = copy.deepcopy(hf_config.config)
    config.pop("gradient_accumulation_steps", None)
    config.setdefault("train_micro_batch_size_per_gpu", args.per_device_train_batch_size)  # not guessed from data
    if inference:  # as transformers' deepspeed_init(inference=True)
        config.pop("optimizer", None)
        config.pop("scheduler", None)
    return config


class HFDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's ``DeepSpeedStrategy`` with transformers' semantics (Lightning runs DeepSpeed on CUDA only).

    - The loss is already normalised over the accumulation window, so the engine must not divide it by the
      accumulation steps again (transformers passes ``scale_wrt_gas=False`` too).
    - The engine clips; `grad_norm` holds its pre-clip norm, filled after each step.
    - A config with an ``optimizer`` but no ``scheduler`` gets the module's scheduler on DeepSpeed's optimizer, as
      transformers does; without ``gradient_clipping`` the module's ``max_grad_norm`` is used.

    Args:
        config: The DeepSpeed config (a dict or a JSON path); "auto" values must be filled (`deepspeed_config`).
        **kwargs: Further ``DeepSpeedStrategy`` keywords.
    """

    def __init__(self, config: dict[str, Any] | str | None = None, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        auto = sorted(_auto_keys(self.config or {}))
        if auto:
            raise ValueError(f"DeepSpeed config keys {auto} are 'auto': only TrainingArguments can fill them (the "
                             "HF-style Trainer does); with the Lightning CLI write the values into the config.")
        self.grad_norm = torch.full((), float("nan"))

    def setup(self, trainer: L.Trainer) -> None:
        module = self.lightning_module
        if "gradient_clipping" not in self.config and getattr(module, "max_grad_norm", None) is not None:
            self.config["gradient_clipping"] = max(float(module.max_grad_norm), 0.0)  # <= 0: no clipping
        super().setup(trainer)

    def backward(self, closure_loss: torch.Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        kwargs.setdefault("scale_wrt_gas", False)
        return super().backward(closure_loss, optimizer, *args, **kwargs)

    def optimizer_step(self, optimizer: Any, closure: Callable[[], Any], model: Any = None, **kwargs: Any) -> Any:
        out = super().optimizer_step(optimizer, closure, model, **kwargs)
        norm = self.model.get_global_grad_norm()
        self.grad_norm.fill_(float(norm) if norm is not None else float("nan"))
        return out

    def _setup_model_and_optimizer(self, model: nn.Module, optimizer: Any, lr_scheduler: Any = None) -> Any:
        module = self.lightning_module
        if optimizer is None and lr_scheduler is None and "optimizer" in self.config \
                and "scheduler" not in self.config and hasattr(module, "create_scheduler"):
            steps = int(module.trainer.estimated_stepping_batches)
            lr_scheduler = functools.partial(_hf_scheduler, module, steps)  # DeepSpeed calls it with its optimizer
        return super()._setup_model_and_optimizer(model, optimizer, lr_scheduler)


def _hf_scheduler(module: Any, steps: int, optimizer: torch.optim.Optimizer) -> Any:
    return module.create_scheduler(steps, optimizer)


def _auto_keys(config: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        if isinstance(value, Mapping):
            keys += _auto_keys(value, f"{prefix}{key}.")
        elif value == "auto":
            keys.append(prefix + key)
    return keys
