"""FSDP: ``fsdp`` + ``fsdp_config`` -> `HFFSDPStrategy` (FSDP1, Lightning's ``FSDPStrategy``) or `HFFSDP2Strategy`
(``fully_shard`` per layer on Lightning's ``ModelParallelStrategy``), with transformers' wrapping rules."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.fabric.strategies.fsdp import _activation_checkpointing_kwargs
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import nn

_SHARDING = {"full_shard": "FULL_SHARD", "shard_grad_op": "SHARD_GRAD_OP", "no_shard": "NO_SHARD",
             "hybrid_shard": "HYBRID_SHARD", "hybrid_shard_zero2": "_HYBRID_SHARD_ZERO2"}
_STATE_DICT = {"FULL_STATE_DICT": "full", "SHARDED_STATE_DICT": "sharded"}
_WRAP_POLICIES = ("TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP")


def _flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def fsdp_settings(fsdp_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """transformers' reading of an ``fsdp_config`` (keys, defaults; same values as ``args.fsdp_plugin_args``).

    ``fsdp_`` prefixes are dropped and ``transformer_layer_cls_to_wrap`` becomes a list, as transformers does, so a
    yaml recipe can carry the same dict as ``TrainingArguments(fsdp_config=...)``.
    """
    config = {k.removeprefix("fsdp_"): v for k, v in dict(fsdp_config or {}).items()}
    version = int(config.get("version", 2))
    layers = config.get("transformer_layer_cls_to_wrap")
    policy = config.get("auto_wrap_policy", "TRANSFORMER_BASED_WRAP")
    if policy not in _WRAP_POLICIES:
        raise ValueError(f"fsdp_config['auto_wrap_policy']={policy!r}: choose one of {_WRAP_POLICIES}.")
    out = {
        "version": version, "auto_wrap_policy": policy, "cpu_offload": _flag(config.get("cpu_offload", False)),
        "transformer_layer_cls_to_wrap": [layers] if isinstance(layers, str) else layers,
        "min_num_params": int(config.get("min_num_params", 0)),
        "cpu_ram_efficient_loading": _flag(config.get("cpu_ram_efficient_loading", False)),
        "state_dict_type": config.get("state_dict_type", "FULL_STATE_DICT"),
        "activation_checkpointing": _flag(config.get("activation_checkpointing", False)),
    }
    if out["state_dict_type"] not in _STATE_DICT:
        raise ValueError(f"fsdp_config['state_dict_type']={out['state_dict_type']!r}: choose one of {list(_STATE_DICT)}.")
    if version == 2:  # a bool; the FSDP1 names of the two strategies FSDP2 has are accepted too
        reshard = config.get("reshard_after_forward", True)
        out["reshard_after_forward"] = {"full_shard": True, "shard_grad_op": False}.get(str(reshard).lower(),
                                                                                       _flag(reshard))
        return out
    prefetch = str(config.get("backward_prefetch", "NO_PREFETCH")).upper()
    if prefetch not in ("BACKWARD_PRE", "BACKWARD_POST", "NO_PREFETCH"):
        raise ValueError(f"fsdp_config['backward_prefetch']={prefetch!r}: choose BACKWARD_PRE, BACKWARD_POST or "
                         "NO_PREFETCH.")
    out.update(reshard_after_forward=str(config.get("reshard_after_forward", "full_shard")).lower(),
               forward_prefetch=_flag(config.get("forward_prefetch", False)), backward_prefetch=prefetch,
               use_orig_params=_flag(config.get("use_orig_params", True)),
               sync_module_states=_flag(config.get("sync_module_states", True)))
    if "limit_all_gathers" in config:
        out["limit_all_gathers"] = _flag(config["limit_all_gathers"])
    if out["cpu_ram_efficient_loading"] and not out["sync_module_states"]:
        raise ValueError("fsdp_config: cpu_ram_efficient_loading needs sync_module_states=True (rank 0 broadcasts "
                         "the weights); remove sync_module_states or set it to true.")
    return out


def _versioned(fsdp_config: Mapping[str, Any] | None, version: int) -> dict[str, Any]:
    settings = fsdp_settings({"version": version, **(fsdp_config or {})})
    if settings["version"] != version:
        other = "HFFSDPStrategy" if settings["version"] == 1 else "HFFSDP2Strategy"
        raise ValueError(f"fsdp_config['version']={settings['version']} but this strategy runs FSDP{version}; use "
                         f"{other}, or drop the version key.")
    return settings


def layer_classes(model: nn.Module, settings: Mapping[str, Any]) -> set[type[nn.Module]]:
    """The module classes to shard (and checkpoint) one by one: ``transformer_layer_cls_to_wrap`` names, else the
    model's ``_no_split_modules`` (transformers' default), found in the model by class name."""
    root = getattr(model, "model", model)  # an HFModule holds the transformers model as .model
    names = settings.get("transformer_layer_cls_to_wrap") or list(getattr(root, "_no_split_modules", None) or [])
    found = {type(m) for m in model.modules() if type(m).__name__ in names}
    missing = sorted(set(names) - {cls.__name__ for cls in found})
    if missing:
        raise ValueError(f"fsdp_config['transformer_layer_cls_to_wrap'] names {missing}, which the model does not "
                         f"contain; use class names of its layers (e.g. {sorted({type(m).__name__ for m in root.children()})}).")
    return found


def _wrap_check(model: nn.Module, settings: Mapping[str, Any]) -> Callable[[nn.Module], bool] | None:
    """Which submodules are sharded separately, per ``auto_wrap_policy`` (None: only the root)."""
    policy = settings["auto_wrap_policy"]
    if policy == "SIZE_BASED_WRAP" and settings["min_num_params"] > 0:
        limit = settings["min_num_params"]
        return lambda m: sum(p.numel() for p in m.parameters()) >= limit
    if policy == "TRANSFORMER_BASED_WRAP":
        classes = tuple(layer_classes(model, settings))
        return (lambda m: isinstance(m, classes)) if classes else None
    return None


class HFFSDPStrategy(FSDPStrategy):
    """Lightning's ``FSDPStrategy`` (FSDP1) configured by an HF ``fsdp_config`` with ``version: 1``.

    The wrap and activation-checkpointing policies need the model, so they are resolved in `setup` (from
    `apply_fsdp_config`); every other setting is passed to ``FSDPStrategy`` here. Lightning runs FSDP1 on CUDA only.

    Args:
        fsdp_config: transformers' ``fsdp_config`` dict (read by `fsdp_settings`).
        process_group_backend: ``ddp_backend`` (default: nccl on CUDA).
        timeout: ``ddp_timeout`` of the process group.
        **kwargs: Further ``FSDPStrategy`` keywords.
    """

    def __init__(self, fsdp_config: dict[str, Any] | None = None, process_group_backend: str | None = None,
                 timeout: timedelta | None = default_pg_timeout, **kwargs: Any) -> None:
        from torch.distributed.fsdp import BackwardPrefetch, ShardingStrategy

        settings = _versioned(fsdp_config, 1)
        sharding = _SHARDING.get(settings["reshard_after_forward"])
        if sharding is None:
            raise ValueError(f"fsdp_config['reshard_after_forward']={settings['reshard_after_forward']!r}: FSDP1 takes "
                             f"one of {sorted(_SHARDING)}.")
        prefetch = settings["backward_prefetch"]
        extra = {k: settings[k] for k in ("forward_prefetch", "use_orig_params", "sync_module_states",
                                          "limit_all_gathers") if k in settings}
        extra["sync_module_states"] = extra["sync_module_states"] or settings["cpu_ram_efficient_loading"]
        super().__init__(cpu_offload=settings["cpu_offload"], state_dict_type=_STATE_DICT[settings["state_dict_type"]],
                         backward_prefetch=None if prefetch == "NO_PREFETCH" else BackwardPrefetch[prefetch],
                         process_group_backend=process_group_backend, timeout=timeout, **{**extra, **kwargs})
        # Set after construction: FSDPStrategy checks hybrid sharding against a wrap policy that setup() resolves.
        self.sharding_strategy = ShardingStrategy[sharding]
        self.fsdp_settings = settings

    def apply_fsdp_config(self, module: nn.Module) -> None:
        """Resolves the wrap / activation-checkpointing policies of ``fsdp_config`` against ``module``."""
        settings = self.fsdp_settings
        policy = settings["auto_wrap_policy"]
        if policy == "TRANSFORMER_BASED_WRAP":
            classes = layer_classes(module, settings)
            if classes:
                from torch.distributed.fsdp.wrap import ModuleWrapPolicy

                self.kwargs["auto_wrap_policy"] = ModuleWrapPolicy(classes)
        elif policy == "SIZE_BASED_WRAP" and settings["min_num_params"] > 0:
            from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy

            self.kwargs["auto_wrap_policy"] = functools.partial(size_based_auto_wrap_policy,
                                                                min_num_params=settings["min_num_params"])
        if settings["activation_checkpointing"]:
            self._activation_checkpointing_kwargs = _activation_checkpointing_kwargs(
                None, layer_classes(module, settings))
        if "HYBRID" in self.sharding_strategy.name and not {"auto_wrap_policy", "device_mesh",
                                                             "process_group"} & set(self.kwargs):
            raise ValueError("fsdp_config: hybrid sharding needs a wrap policy; keep auto_wrap_policy="
                             "'TRANSFORMER_BASED_WRAP' with layer classes, or SIZE_BASED_WRAP with min_num_params > 0.")

    def setup_environment(self) -> None:
        if self.root_device.type == "cpu":  # torch's FSDP1 refuses CPU too, later and less plainly
            raise ValueError("fsdp_config version 1 (FSDP1) runs on CUDA only; on CPU use FSDP2: drop the version key "
                             "(transformers' default) or use HFFSDP2Strategy.")
        super().setup_environment()

    def setup(self, trainer: L.Trainer) -> None:
        self.apply_fsdp_config(self.lightning_module)
        super().setup(trainer)


def shard_fsdp2(module: nn.Module, mesh: Any, settings: Mapping[str, Any]) -> None:
    """``fully_shard`` each selected layer (children first), then the root; activation checkpointing first.

    The root is the module's ``.model`` (an HFModule's transformers model) when it has one: FSDP2 gathers the root's
    own parameters in a forward hook, and the training step calls ``.model``, not the LightningModule.
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, OffloadPolicy, fully_shard

    inner = getattr(module, "model", None)
    module = inner if isinstance(inner, nn.Module) else module
    if isinstance(module, FSDPModule):
        return  # already sharded (e.g. evaluated again after fit)
    check = _wrap_check(module, settings)
    if settings["activation_checkpointing"]:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

        classes = tuple(layer_classes(module, settings))
        apply_activation_checkpointing(module, check_fn=lambda m: isinstance(m, classes))
    options = {"mesh": mesh, "reshard_after_forward": settings["reshard_after_forward"],
               # pinned host memory (faster copies to the GPU) needs an accelerator; a CPU mesh offloads unpinned
               "offload_policy": CPUOffloadPolicy(pin_memory=mesh.device_type != "cpu") if settings["cpu_offload"]
               else OffloadPolicy()}
    if check is not None:
        for sub in reversed(list(module.modules())):  # post-order: inner layers before the modules holding them
            if sub is not module and check(sub):
                fully_shard(sub, **options)
    fully_shard(module, **options)


def move_unsharded(module: nn.Module, device: Any) -> None:
    """Moves to ``device`` the parameters and buffers that FSDP2 does not manage; its sharded parameters (DTensors)
    stay where ``fully_shard`` put them: on the CPU under ``CPUOffloadPolicy``, from where FSDP2 copies each shard to
    the GPU for its forward and backward. (A plain ``module.to(device)``, Lightning's ``model_to_device``, would move
    the offloaded shards to the GPU, and FSDP2 then refuses to run: "FSDP parameters should be materialized on CPU".)
    """
    from torch.distributed.tensor import DTensor

    for sub in module.modules():
        for param in sub._parameters.values():
            if param is not None and not isinstance(param, DTensor) and param.device != device:
                with torch.no_grad():  # swapped in place: the Parameter object (and who holds it) stays the same
                    torch.utils.swap_tensors(param, nn.Parameter(param.to(device), param.requires_grad))
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None and not isinstance(buffer, DTensor) and buffer.device != device:
                sub._buffers[name] = buffer.to(device)


class HFFSDP2Strategy(ModelParallelStrategy):
    """FSDP2 (``torch.distributed.fsdp.fully_shard``) on Lightning's ``ModelParallelStrategy``, from an ``fsdp_config``.

    Pure data parallelism by default: every process holds one shard (``data_parallel_size`` = world size,
    ``tensor_parallel_size`` = 1). Runs on CPU (gloo) as well as CUDA. ``state_dict_type: SHARDED_STATE_DICT`` saves
    Lightning checkpoints as one folder of shards; the default gathers full weights on rank 0.

    Args:
        fsdp_config: transformers' ``fsdp_config`` dict (``version`` 2; read by `fsdp_settings`).
        data_parallel_size: Processes sharing one shard group ("auto": world size / tensor_parallel_size).
        tensor_parallel_size: Tensor-parallel group size (your ``configure_model`` must apply tensor parallelism).
        save_distributed_checkpoint: Override ``state_dict_type`` (True: sharded Lightning checkpoints).
        process_group_backend: ``ddp_backend`` (default: gloo on CPU, nccl on CUDA).
        timeout: ``ddp_timeout`` of the process group.
    """

    def __init__(self, fsdp_config: dict[str, Any] | None = None, data_parallel_size: int | str = "auto",
                 tensor_parallel_size: int = 1, save_distributed_checkpoint: bool | None = None,
                 process_group_backend: str | None = None, timeout: timedelta | None = default_pg_timeout) -> None:
        settings = _versioned(fsdp_config, 2)
        if save_distributed_checkpoint is None:
            save_distributed_checkpoint = settings["state_dict_type"] == "SHARDED_STATE_DICT"
        super().__init__(data_parallel_size=data_parallel_size, tensor_parallel_size=tensor_parallel_size,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend, timeout=timeout)
        self.fsdp_settings = settings

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes // int(self._tensor_parallel_size)
        super().setup_environment()

    def setup(self, trainer: L.Trainer) -> None:
        shard_fsdp2(self.lightning_module, self.device_mesh["data_parallel"], self.fsdp_settings)
        super().setup(trainer)

    def model_to_device(self) -> None:
        if self.fsdp_settings["cpu_offload"]:
            move_unsharded(self.model, self.root_device)  # the offloaded shards stay on the CPU
            return
        super().model_to_device()
