"""The one place that knows about distributed back-ends (DDP / FSDP / DeepSpeed / model parallel).

``TrainingArguments`` fields become Lightning strategies here, and nowhere else:

- ``ddp_*`` -> ``DDPStrategy`` keywords (``_DDP_FIELDS``); ``ddp_backend`` / ``ddp_timeout`` reach every strategy.
- ``fsdp`` + ``fsdp_config`` (``version`` 2, transformers' default) -> `HFFSDP2Strategy`, Lightning's
  ``ModelParallelStrategy`` applying ``torch.distributed.fsdp.fully_shard`` per layer; ``version: 1`` -> `HFFSDPStrategy`
  (Lightning's ``FSDPStrategy``). Layer classes default to the model's ``_no_split_modules``, as transformers.
- ``deepspeed`` -> `HFDeepSpeedStrategy` with the config transformers itself fills (``"auto"`` values).
- precision (``fp16`` / ``bf16``) is a Lightning Trainer flag (``_args_table``); Lightning picks the matching plugin.

Modules and callbacks call the helpers at the bottom (`clip_grad_norm`, `scaler_state`) instead of testing for a
back-end themselves. Strategy choice and gradient clipping are registries keyed by name / strategy class.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.fabric.strategies.fsdp import _activation_checkpointing_kwargs
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy, Strategy
from torch import nn

# ----------------------------------------------------------------------------------------------- launch layout


def launch_layout(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(devices per node, num_nodes)`` of the launcher that started this process.

    torchrun / torchelastic set ``LOCAL_WORLD_SIZE`` and ``WORLD_SIZE``; ``srun`` sets ``SLURM_NTASKS_PER_NODE`` and
    ``SLURM_NNODES`` (Lightning's cluster environments then assign the ranks). Anything else is one process.
    """
    env = os.environ if env is None else env
    if "LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env:
        local = int(env["LOCAL_WORLD_SIZE"])
        return local, max(int(env["WORLD_SIZE"]) // local, 1)
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        nodes = int(env.get("SLURM_NNODES", "1"))
        per_node = re.match(r"\d+", env.get("SLURM_NTASKS_PER_NODE", "")) or None
        return (int(per_node.group()) if per_node else int(env["SLURM_NTASKS"]) // nodes), nodes
    return 1, 1


# ----------------------------------------------------------------------------------------------- DDP


def _seconds(value: Any) -> timedelta:
    return timedelta(seconds=int(value))


#: TrainingArguments field -> (Lightning strategy keyword, conversion). The first two reach every strategy.
_PROCESS_GROUP_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "ddp_backend": ("process_group_backend", str),
    "ddp_timeout": ("timeout", _seconds),
}
_DDP_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "ddp_find_unused_parameters": ("find_unused_parameters", bool),
    "ddp_bucket_cap_mb": ("bucket_cap_mb", int),
    "ddp_broadcast_buffers": ("broadcast_buffers", bool),
    "ddp_static_graph": ("static_graph", bool),
}


def _fields(args: Any, table: dict[str, tuple[str, Callable[[Any], Any]]]) -> dict[str, Any]:
    return {kw: convert(getattr(args, name)) for name, (kw, convert) in table.items() if getattr(args, name) is not None}


def ddp_kwargs(args: Any, model: nn.Module | None = None) -> dict[str, Any]:
    """``DDPStrategy`` keywords from the ``ddp_*`` fields, with transformers' ``find_unused_parameters`` default.

    transformers: the field when set; for a ``PreTrainedModel``, False under activation checkpointing, else True;
    True for any other module.
    """
    kwargs = {**_fields(args, _PROCESS_GROUP_FIELDS), **_fields(args, _DDP_FIELDS)}
    if "find_unused_parameters" not in kwargs:
        checkpointing = bool(getattr(model, "is_activation_checkpointing", False) or args.activation_checkpointing)
        is_hf = hasattr(model, "is_activation_checkpointing")
        kwargs["find_unused_parameters"] = not checkpointing if is_hf else True
    return kwargs


# ----------------------------------------------------------------------------------------------- FSDP

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
               "offload_policy": CPUOffloadPolicy() if settings["cpu_offload"] else OffloadPolicy()}
    if check is not None:
        for sub in reversed(list(module.modules())):  # post-order: inner layers before the modules holding them
            if sub is not module and check(sub):
                fully_shard(sub, **options)
    fully_shard(module, **options)


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


# ----------------------------------------------------------------------------------------------- DeepSpeed


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
            self.config["gradient_clipping"] = float(module.max_grad_norm)
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


# ----------------------------------------------------------------------------------------------- choosing


def _checked_accelerator_config(args: Any) -> None:
    """``accelerator_config`` / ``parallelism_config`` values that would change results raise (nothing is ignored)."""
    config = args.accelerator_config
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    refused = {
        "split_batches": "set per_device_train_batch_size to the global batch divided by the number of processes",
        "dispatch_batches": "each process reads its own shard of the data; leave it unset",
        "use_configured_state": "the process group is created by Lightning's strategy; leave it False",
    }
    bad = [f"accelerator_config['{k}']={config[k]!r}: {why}" for k, why in refused.items() if config.get(k)]
    if config.get("use_seedable_sampler") is False:
        bad.append("accelerator_config['use_seedable_sampler']=False: the sample order is always seeded "
                   "(seed + epoch); use data_seed to change it")
    if args.parallelism_config is not None:
        bad.append("parallelism_config: use fsdp=True (FSDP2) for sharded data parallelism, or the Lightning CLI with "
                   "ModelParallelStrategy and your own configure_model for tensor / context parallelism")
    if bad:
        raise ValueError("These TrainingArguments cannot be honoured:\n- " + "\n- ".join(bad))


def _single(args: Any, model: nn.Module | None, steps: int | None) -> str:
    return "auto"


def _ddp(args: Any, model: nn.Module | None, steps: int | None) -> Strategy:
    return DDPStrategy(**ddp_kwargs(args, model))


def _fsdp1(args: Any, model: nn.Module | None, steps: int | None) -> Strategy:
    return HFFSDPStrategy(fsdp_config=args.fsdp_config, **_fields(args, _PROCESS_GROUP_FIELDS))


def _fsdp2(args: Any, model: nn.Module | None, steps: int | None) -> Strategy:
    return HFFSDP2Strategy(fsdp_config=args.fsdp_config, **_fields(args, _PROCESS_GROUP_FIELDS))


def _deepspeed(args: Any, model: nn.Module | None, steps: int | None) -> Strategy:
    config = deepspeed_config(args, model, steps or 0, inference=steps is None)
    return HFDeepSpeedStrategy(config=config, **_fields(args, _PROCESS_GROUP_FIELDS))


#: Strategy builders by name: ``(args, model, num_training_steps or None for evaluation) -> strategy``.
STRATEGIES: dict[str, Callable[[Any, nn.Module | None, int | None], Strategy | str]] = {
    "single": _single, "ddp": _ddp, "fsdp1": _fsdp1, "fsdp2": _fsdp2, "deepspeed": _deepspeed,
}


def strategy_name(args: Any, world_size: int) -> str:
    """Which `STRATEGIES` entry the arguments ask for (DeepSpeed, then FSDP, then DDP with several processes)."""
    rules: list[tuple[bool, Callable[[], str]]] = [
        (bool(args.deepspeed), lambda: "deepspeed"),
        (bool(args.fsdp), lambda: f"fsdp{int(fsdp_settings(args.fsdp_config)['version'])}"),
        (world_size > 1, lambda: "ddp"),
    ]
    return next((name() for matched, name in rules if matched), "single")


def trainer_kwargs(args: Any, model: nn.Module | None = None, num_training_steps: int | None = None,
                   env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``lightning.Trainer`` keywords (``strategy``, ``devices``, ``num_nodes``) for the HF-style Trainer.

    Args:
        args: The ``TrainingArguments``.
        model: The model (``find_unused_parameters`` default, DeepSpeed's hidden-size ``"auto"`` values).
        num_training_steps: Optimizer steps of a ``fit``; None for evaluation / prediction.
        env: The environment to read the launcher's layout from (default ``os.environ``).
    """
    _checked_accelerator_config(args)
    if args.tf32 is not None:  # transformers' own switch (TrainingArguments already applied it; idempotent)
        from transformers.utils.import_utils import enable_tf32, is_torch_tf32_available

        if is_torch_tf32_available():
            enable_tf32(bool(args.tf32))
    devices, num_nodes = launch_layout(env)
    strategy = STRATEGIES[strategy_name(args, devices * num_nodes)](args, model, num_training_steps)
    return {"strategy": strategy, "devices": devices, "num_nodes": num_nodes}


# ----------------------------------------------------------------------------------------------- step helpers


def _with_grads(module: L.LightningModule) -> list[torch.Tensor]:
    # Model order, as transformers.Trainer's clip_grad_norm_(model.parameters()): the same summation order gives
    # bit-identical norms (optimizer-group order differs in the last bits, which Adam can amplify).
    return [p for p in module.parameters() if p.grad is not None]


def _clip_local(module: L.LightningModule, max_norm: float) -> torch.Tensor:
    """DDP / single device: gradients are whole on every rank. FSDP2: DTensor gradients; the norm is made whole."""
    params = _with_grads(module)
    if not params:
        return torch.zeros((), device=module.device)
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if hasattr(norm, "full_tensor"):  # a DTensor (FSDP2): partial norms of the shards, reduced across ranks
        norm = norm.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def _clip_fsdp1(module: L.LightningModule, max_norm: float) -> torch.Tensor:
    """FSDP1: the root wrapper's ``clip_grad_norm_`` reduces the norm of the flat shards across ranks."""
    return module.trainer.strategy.model.clip_grad_norm_(max_norm if max_norm > 0 else math.inf)


def _clip_deepspeed(module: L.LightningModule, max_norm: float) -> torch.Tensor:
    """DeepSpeed: the engine clips to its ``gradient_clipping`` inside its step; its norm is filled in afterwards."""
    return getattr(module.trainer.strategy, "grad_norm", torch.full((), float("nan")))


#: Strategy class -> clipping (the most derived registered class of the running strategy wins).
_CLIPPERS: dict[type, Callable[[L.LightningModule, float], torch.Tensor]] = {
    FSDPStrategy: _clip_fsdp1, DeepSpeedStrategy: _clip_deepspeed,
}


def clip_grad_norm(module: L.LightningModule, optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Returns the total gradient norm before clipping and clips to ``max_norm`` when it is > 0.

    Runs after the precision plugin has unscaled fp16 gradients (Lightning calls ``configure_gradient_clipping`` from
    its ``_after_closure``). Under DeepSpeed the engine clips during its step and the returned tensor receives the
    engine's norm after that step (read it after ``optimizer.step``, as the logging does).
    """
    strategy = module._trainer.strategy if module._trainer is not None else None
    return clipper_for(strategy)(module, max_norm)


def clipper_for(strategy: Strategy | None) -> Callable[[L.LightningModule, float], torch.Tensor]:
    """The clipping function of a strategy: the most derived class registered in `_CLIPPERS`, else `_clip_local`."""
    return next((_CLIPPERS[cls] for cls in type(strategy).__mro__ if cls in _CLIPPERS), _clip_local)


def forward_is_collective(strategy: Strategy) -> bool:
    """Whether each forward pass gathers sharded parameters across ranks (FSDP, FSDP2, DeepSpeed ZeRO-3), so every
    rank must run the same number of forwards (evaluation evens out ranks with fewer batches)."""
    if isinstance(strategy, DeepSpeedStrategy):
        return bool(strategy.zero_stage_3)
    return isinstance(strategy, (FSDPStrategy, ModelParallelStrategy))


def scaler_state(trainer: L.Trainer) -> dict[str, Any] | None:
    """The fp16 loss scaler's ``state_dict`` (transformers' ``scaler.pt``); None without one (bf16 / fp32, or
    DeepSpeed, whose engine keeps its own scaler). Covers Lightning's ``MixedPrecision`` and FSDP's sharded scaler."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return scaler.state_dict() if scaler is not None else None


def load_scaler_state(trainer: L.Trainer, state: dict[str, Any]) -> bool:
    """Restores a `scaler_state`; returns False when this run has no scaler to restore into."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is None:
        return False
    scaler.load_state_dict(state)
    return True
