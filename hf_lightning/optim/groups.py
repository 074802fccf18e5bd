"""Parameter-group recipes: layer-wise learning-rate decay (LLRD) and an optimizer over any groups.

LLRD (Howard & Ruder 2018; Clark et al. 2020, ELECTRA) trains the layers near the input more slowly than those near the
output: with ``L`` transformer layers and a decay ``d``, the head (everything above the layers: pooler, classifier,
final norm) keeps the full learning rate, layer ``i`` (0-based, from the input) gets ``lr * d ** (L - i)`` and the
embeddings ``lr * d ** (L + 1)``. Each depth is split as transformers.Trainer splits the whole model: weights at
``weight_decay``, biases and norm layers at 0 (``transformers.Trainer.get_decay_parameter_names``).

The groups are ordered from the head down to the embeddings, so ``param_groups[0]`` holds the peak learning rate: that
is the ``learning_rate`` HF's logging reports (transformers.Trainer logs the first group's rate). Every scheduler of
``transformers.get_scheduler`` multiplies each group's own initial rate by the same factor, so the ratios hold for the
whole run.

From yaml, use `LLRDModule` (an `HFModule` with ``layer_decay``); from Python, pass `layerwise_lr_decay_groups` to
any optimizer, or `optimizer_for_groups` to get transformers' optimizer for an ``optim`` name over them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.trainer import Trainer as HFTrainer

from hf_lightning.modules.base import HFModule
from hf_lightning.optim import OptimizerFactory, _ArgsView


def find_layer_stack(model: nn.Module) -> str:
    """The name of the ``nn.ModuleList`` of repeated transformer blocks (``bert.encoder.layer``, ``transformer.h``...).

    Among the module lists whose children all share one class, the one holding the most parameters wins (for an
    encoder-decoder model that is one of the two stacks: pass ``layers_path`` to choose).

    Raises:
        ValueError: When the model has no such list.
    """
    best, best_size = None, -1
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = name, size
    if best is None:
        raise ValueError(
            f"{type(model).__name__} has no nn.ModuleList of repeated blocks, so its layers cannot be found for "
            "layer-wise learning-rate decay; pass layers_path (the dotted name of the layer list)."
        )
    return best


def _is_embedding(name: str, module: nn.Module) -> bool:
    # nn.Embedding tables (wte, wpe, shared...) and everything inside an "*embed*" container (BERT's embeddings.LayerNorm).
    return isinstance(module, nn.Embedding) or any("embed" in part.lower() for part in name.split(".")[:-1])


def parameter_depths(model: nn.Module, layers_path: str | None = None) -> tuple[dict[str, int], int]:
    """Depth of each trainable parameter: 0 embeddings, ``i + 1`` for layer ``i``, ``L + 1`` for the head.

    Args:
        model: The model.
        layers_path: Dotted name of the layer list; found by `find_layer_stack` when None.

    Returns:
        ``({parameter name: depth}, L)``.
    """
    layers_path = layers_path or find_layer_stack(model)
    try:
        layers = model.get_submodule(layers_path)
    except AttributeError as err:
        raise ValueError(f"layers_path='{layers_path}' is not a module of {type(model).__name__}: {err}") from err
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"layers_path='{layers_path}' is a {type(layers).__name__}, not the nn.ModuleList of layers.")
    num_layers = len(layers)
    owners = {f"{m}.{p}" if m else p: module for m, module in model.named_modules()
              for p, _ in module.named_parameters(recurse=False)}
    prefix = layers_path + "."
    depths = {}
    for name, param in model.named_parameters():  # named_parameters drops tied copies (an MLM decoder = embeddings)
        if not param.requires_grad:
            continue
        if name.startswith(prefix):
            depths[name] = int(name[len(prefix):].split(".", 1)[0]) + 1
        elif _is_embedding(name, owners[name]):
            depths[name] = 0
        else:
            depths[name] = num_layers + 1
    return depths, num_layers


def layerwise_lr_decay_groups(
    model: nn.Module, learning_rate: float, decay: float, weight_decay: float = 0.0, layers_path: str | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups with layer-wise learning-rate decay and HF's weight-decay split.

    Args:
        model: The model whose trainable parameters are grouped.
        learning_rate: The head's (peak) learning rate.
        decay: Factor in (0, 1] per layer below the head (1 gives one learning rate everywhere).
        weight_decay: Weight decay of weights; biases and norm layers get 0, as transformers.Trainer.
        layers_path: Dotted name of the layer list (found automatically when None).

    Returns:
        Groups ``{"params", "lr", "weight_decay", "name"}``, head first; empty groups are left out. ``name`` reads
        ``head`` / ``layer_<i>`` / ``embeddings`` plus ``/no_decay`` (Lightning's LearningRateMonitor uses it).
    """
    if not 0 < decay <= 1:
        raise ValueError(f"layer_decay={decay} must be in (0, 1]: each layer's rate is the one above times layer_decay.")
    if learning_rate < 0 or weight_decay < 0:
        raise ValueError(f"learning_rate={learning_rate} and weight_decay={weight_decay} must be >= 0.")
    depths, num_layers = parameter_depths(model, layers_path)
    # transformers' own rule for which parameters decay (it does not read `self`), as in hf_lightning.optim.
    decayed = set(HFTrainer.get_decay_parameter_names(None, model))
    named = dict(model.named_parameters())
    groups = []
    for depth in range(num_layers + 1, -1, -1):
        label = "head" if depth == num_layers + 1 else "embeddings" if depth == 0 else f"layer_{depth - 1}"
        lr = learning_rate * decay ** (num_layers + 1 - depth)
        for suffix, wd, keep in (("", weight_decay, True), ("/no_decay", 0.0, False)):
            params = [named[n] for n, d in depths.items() if d == depth and (n in decayed) == keep]
            if params:
                groups.append({"params": params, "lr": lr, "weight_decay": wd, "name": label + suffix})
    return groups


def optimizer_for_groups(
    model: nn.Module,
    groups: list[dict[str, Any]],
    optim_config: dict[str, Any],
    optimizer_factory: OptimizerFactory | None = None,
    optimizer_cls_and_kwargs: tuple[type, dict[str, Any]] | None = None,
) -> torch.optim.Optimizer:
    """The optimizer `HFModule` would build (``optim`` name, ``optimizer`` factory or class and kwargs) over ``groups``.

    Args:
        model: The model (transformers' factory inspects it for some optimizers).
        groups: Parameter groups; their ``lr`` / ``weight_decay`` override the optimizer's defaults.
        optim_config: `HFModule.optim_config` (``optim``, ``learning_rate``, ``adam_beta1``...).
        optimizer_factory: Called with the groups instead of ``optim`` (a LightningCLI ``class_path``).
        optimizer_cls_and_kwargs: Class and keyword arguments instead of ``optim``.
    """
    if optimizer_factory is not None:
        return optimizer_factory(groups)
    if optimizer_cls_and_kwargs is None:
        if optim_config.get("optim_target_modules") is not None:
            raise ValueError("optim_target_modules (GaLore-style optimizers) builds its own parameter groups and cannot "
                             "be combined with layer-wise learning-rate decay; set one of the two.")
        # transformers' own optimizer factory, read through the same TrainingArguments view as build_optimizer.
        optimizer_cls_and_kwargs = HFTrainer.get_optimizer_cls_and_kwargs(_ArgsView(**optim_config), model)
    cls, kwargs = optimizer_cls_and_kwargs
    return cls(groups, **kwargs)


class LLRDModule(HFModule):
    """`HFModule` whose optimizer uses layer-wise learning-rate decay (see `layerwise_lr_decay_groups`).

    The head trains at ``learning_rate``, layer ``i`` of ``L`` at ``learning_rate * layer_decay ** (L - i)`` and the
    embeddings at ``learning_rate * layer_decay ** (L + 1)``; the schedule scales every group alike.

    Args:
        layer_decay: Learning-rate factor per layer below the head, in (0, 1] (0.8 to 0.95 are common).
        layers_path: Dotted name of the transformer-layer list (e.g. ``bert.encoder.layer``); found automatically
            (the largest list of identical blocks) when None.
        **kwargs: `HFModule` arguments (``model``, ``optimization`` with ``learning_rate``, ``weight_decay``, ``optim``...).
    """

    def __init__(self, layer_decay: float = 0.8, layers_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 < layer_decay <= 1:
            raise ValueError(f"model.layer_decay={layer_decay} must be in (0, 1] (1 disables the decay).")
        self.layer_decay = layer_decay
        self.layers_path = layers_path
        parameter_depths(self.model, layers_path)  # fail at construction, not at fit, when the layers are not found

    def create_optimizer(self) -> torch.optim.Optimizer:
        """transformers' optimizer for ``optim`` over the layer-wise groups."""
        config = self.optim_config
        groups = layerwise_lr_decay_groups(self.model, config["learning_rate"], self.layer_decay,
                                           config["weight_decay"], self.layers_path)
        return optimizer_for_groups(self.model, groups, config, self.optimizer_factory, self.optimizer_cls_and_kwargs)


__all__ = ["LLRDModule", "find_layer_stack", "layerwise_lr_decay_groups", "optimizer_for_groups", "parameter_depths"]
