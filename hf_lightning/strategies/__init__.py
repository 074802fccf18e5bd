"""The one place that knows about distributed back-ends (DDP / FSDP / DeepSpeed / model parallel).

``TrainingArguments`` fields become Lightning strategies here, and nowhere else:

- ``ddp_*`` -> ``DDPStrategy`` keywords (``_DDP_FIELDS``); ``ddp_backend`` / ``ddp_timeout`` reach every strategy.
- ``fsdp`` + ``fsdp_config`` (``version`` 2, transformers' default) -> `HFFSDP2Strategy`, Lightning's
  ``ModelParallelStrategy`` applying ``torch.distributed.fsdp.fully_shard`` per layer; ``version: 1`` -> `HFFSDPStrategy`
  (Lightning's ``FSDPStrategy``). Layer classes default to the model's ``_no_split_modules``, as transformers.
- ``deepspeed`` -> `HFDeepSpeedStrategy` with the config transformers itself fills (``"auto"`` values).
- precision (``fp16`` / ``bf16``) is a Lightning Trainer flag (``_args_table``); Lightning picks the matching plugin.

One file per back-end (``ddp.py``, ``fsdp.py``, ``deepspeed.py``), the launcher's layout (``layout.py``) and the
per-step helpers (``steps.py``); this package chooses among them (`STRATEGIES`, `trainer_kwargs`). Modules and
callbacks call the helpers (`clip_grad_norm`, `scaler_state`) instead of testing for a back-end themselves. Strategy
choice and gradient clipping are registries keyed by name / strategy class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lightning.pytorch.strategies import DDPStrategy, Strategy
from torch import nn

from hf_lightning.strategies.ddp import _PROCESS_GROUP_FIELDS, _fields, ddp_kwargs
from hf_lightning.strategies.deepspeed import HFDeepSpeedStrategy, deepspeed_config
from hf_lightning.strategies.fsdp import HFFSDP2Strategy, HFFSDPStrategy, fsdp_settings, layer_classes, shard_fsdp2
from hf_lightning.strategies.layout import launch_layout, launched_rank, synchronize_exit
from hf_lightning.strategies.steps import (
    clip_grad_norm,
    clipper_for,
    forward_is_collective,
    generation_is_synced,
    load_scaler_state,
    scaler_state,
)

__all__ = [
    "STRATEGIES", "HFDeepSpeedStrategy", "HFFSDP2Strategy", "HFFSDPStrategy", "clip_grad_norm", "clipper_for",
    "ddp_kwargs", "deepspeed_config", "forward_is_collective", "fsdp_settings", "generation_is_synced", "launch_layout", "launched_rank", "layer_classes",
    "load_scaler_state", "scaler_state", "shard_fsdp2", "strategy_name", "synchronize_exit", "trainer_kwargs",
]


def _checked_accelerator_config(args: Any, world_size: int) -> None:
    """``accelerator_config`` / ``parallelism_config`` values that would change results raise (nothing is ignored).

    ``split_batches`` / ``dispatch_batches`` change nothing in one process (transformers trains as without them); with
    several processes they would change which samples each process reads, so they are refused there.
    """
    config = args.accelerator_config
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    refused = {
        "use_configured_state": "the process group is created by Lightning's strategy; leave it False",
    }
    if world_size > 1:
        refused = {
            "split_batches": "set per_device_train_batch_size to the global batch divided by the number of processes",
            "dispatch_batches": "each process reads its own shard of the data; leave it unset",
            **refused,
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
    devices, num_nodes = launch_layout(env)
    _checked_accelerator_config(args, devices * num_nodes)
    if args.tf32 is not None:  # transformers' own switch (TrainingArguments already applied it; idempotent)
        from transformers.utils.import_utils import enable_tf32, is_torch_tf32_available

        if is_torch_tf32_available():
            enable_tf32(bool(args.tf32))
    strategy = STRATEGIES[strategy_name(args, devices * num_nodes)](args, model, num_training_steps)
    return {"strategy": strategy, "devices": devices, "num_nodes": num_nodes}
