"""The legacy names: ``LEGACY`` maps each ``TrainingArguments`` name that transformers 5.x removed to what replaces
it (a `Legacy` entry: the field it is passed on as, a key merged into a dict field, or the values that cannot change
results when it has no effect any more). ``TrainingArguments`` resolves them before transformers sees the arguments
(`hf_lightning.args`), and the legacy table of ``docs/migration.md`` is generated from ``LEGACY``. Both names are
re-exported by `hf_lightning._args_table`, the table of the current fields.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _always(value: Any) -> bool:
    return True


@dataclass(frozen=True)
class Legacy:
    """A name transformers 5.x no longer accepts.

    Attributes:
        use: What to do instead, as an imperative phrase (shown in the warning and the docs).
        apply: ``(value, given_kwargs) -> kwargs to set``; None when the name has no effect any more.
        accepts: For names without effect: the values that cannot change results (others raise).
        refuse: Which values raise and why, naming the alternative.
    """

    use: str
    apply: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
    accepts: Callable[[Any], bool] = _always
    refuse: str = ""


def _check_conflict(old: str, new: str, value: Any, given: dict[str, Any]) -> None:
    if new in given and given[new] != value:
        raise ValueError(
            f"`{old}` asks for {new}={value!r} but {new}={given[new]!r} was passed too; pass only `{new}`."
        )


def _rename(old: str, new: str) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    def apply(value: Any, given: dict[str, Any]) -> dict[str, Any]:
        _check_conflict(old, new, value, given)
        return {new: value}

    return apply


def _set_if_true(old: str, new: str, new_value: Any) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    def apply(value: Any, given: dict[str, Any]) -> dict[str, Any]:
        if not value:
            return {}
        _check_conflict(old, new, new_value, given)
        return {new: new_value}

    return apply


def _merge_into(field: str, key: str, unset: Any = None) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    def apply(value: Any, given: dict[str, Any]) -> dict[str, Any]:
        if value == unset:
            return {}
        current = given.get(field)
        if hasattr(current, "to_dict"):
            current = current.to_dict()
        if isinstance(current, str):
            if not current.startswith("{"):
                raise ValueError(f"`{field}` is a file ({current!r}); put `{key}` in that file instead.")
            current = json.loads(current)
        return {field: {**(current or {}), key: value}}

    return apply


def _append_to(field: str, item: str) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    def apply(value: Any, given: dict[str, Any]) -> dict[str, Any]:
        if not value:
            return {}
        current = given.get(field) or []
        current = current.split() if isinstance(current, str) else list(current)
        return {field: current if item in current else [*current, item]}

    return apply


def _warmup_ratio(value: Any, given: dict[str, Any]) -> dict[str, Any]:
    if not 0 <= value < 1:
        raise ValueError(f"`warmup_ratio` must be in [0, 1), got {value}; for a step count pass `warmup_steps`.")
    if value == 0:
        return {}
    _check_conflict("warmup_ratio", "warmup_steps", float(value), given)
    return {"warmup_steps": float(value)}


def _keep_logging_dir(value: Any, given: dict[str, Any]) -> dict[str, Any]:
    return {"logging_dir": value}


def _hub_organization(value: Any, given: dict[str, Any]) -> dict[str, Any]:
    model_id = given.get("hub_model_id") or os.path.basename(os.path.normpath(given.get("output_dir") or "."))
    return {"hub_model_id": f"{value}/{model_id.split('/')[-1]}"}


def _falsy(value: Any) -> bool:
    return not value


def _torch_amp(value: Any) -> bool:
    return value in ("auto", "amp", "cpu_amp")


_APEX = "'apex': apex is not supported; mixed precision uses torch.amp (fp16=True or bf16=True)"

LEGACY: dict[str, Legacy] = {
    "evaluation_strategy": Legacy("use `eval_strategy` (same values)", _rename("evaluation_strategy", "eval_strategy")),
    "warmup_ratio": Legacy("use `warmup_steps` with a float in [0, 1)", _warmup_ratio, refuse="outside [0, 1)"),
    "group_by_length": Legacy("use `train_sampling_strategy='group_by_length'`",
                              _set_if_true("group_by_length", "train_sampling_strategy", "group_by_length")),
    "per_gpu_train_batch_size": Legacy("use `per_device_train_batch_size`",
                                       _rename("per_gpu_train_batch_size", "per_device_train_batch_size")),
    "per_gpu_eval_batch_size": Legacy("use `per_device_eval_batch_size`",
                                      _rename("per_gpu_eval_batch_size", "per_device_eval_batch_size")),
    "no_cuda": Legacy("use `use_cpu`", _set_if_true("no_cuda", "use_cpu", True)),
    "logging_dir": Legacy("set $TENSORBOARD_LOGGING_DIR for transformers; hf_lightning still honours it as "
                          "HFFlow's TensorBoard directory", _keep_logging_dir),
    "include_inputs_for_metrics": Legacy("use `include_for_metrics=['inputs']`",
                                         _append_to("include_for_metrics", "inputs")),
    "include_tokens_per_second": Legacy("use `include_num_input_tokens_seen='all'` (also logs train_tokens_per_second)",
                                        _set_if_true("include_tokens_per_second", "include_num_input_tokens_seen",
                                                     "all")),
    "push_to_hub_token": Legacy("use `hub_token`", _rename("push_to_hub_token", "hub_token")),
    "push_to_hub_model_id": Legacy("use `hub_model_id`", _rename("push_to_hub_model_id", "hub_model_id")),
    "push_to_hub_organization": Legacy("use `hub_model_id='<organization>/<name>'`", _hub_organization),
    "fsdp_min_num_params": Legacy("use `fsdp_config={'min_num_params': ...}`",
                                  _merge_into("fsdp_config", "min_num_params", unset=0)),
    "fsdp_transformer_layer_cls_to_wrap": Legacy("use `fsdp_config={'transformer_layer_cls_to_wrap': ...}`",
                                                 _merge_into("fsdp_config", "transformer_layer_cls_to_wrap")),
    "split_batches": Legacy("use `accelerator_config={'split_batches': ...}`",
                            _merge_into("accelerator_config", "split_batches")),
    "dispatch_batches": Legacy("use `accelerator_config={'dispatch_batches': ...}`",
                               _merge_into("accelerator_config", "dispatch_batches")),
    "tpu_metrics_debug": Legacy("use `debug='tpu_metrics_debug'`", _append_to("debug", "tpu_metrics_debug")),
    "adafactor": Legacy("use `optim='adafactor'`", _set_if_true("adafactor", "optim", "adafactor")),
    "torchdynamo": Legacy("use `torch_compile_backend`", _rename("torchdynamo", "torch_compile_backend")),
    "xpu_backend": Legacy("use `ddp_backend`", _rename("xpu_backend", "ddp_backend")),
    "overwrite_output_dir": Legacy("drop it (Trainer never read it); resume with `resume_from_checkpoint`"),
    "use_mps_device": Legacy("drop it: MPS is used automatically when available (accelerator='auto')"),
    "fp16_backend": Legacy("drop it: mixed precision always uses torch.amp", accepts=_torch_amp, refuse=_APEX),
    "half_precision_backend": Legacy("drop it: mixed precision always uses torch.amp", accepts=_torch_amp,
                                     refuse=_APEX),
    "fp16_opt_level": Legacy("drop it: it only configured apex, which is not used"),
    "tpu_num_cores": Legacy("set the TPU_NUM_CORES environment variable"),
    "ray_scope": Legacy("set the RAY_SCOPE environment variable"),
    "save_safetensors": Legacy("drop it: weights are always saved as safetensors", accepts=bool,
                               refuse="False: weights are always written as model.safetensors"),
    "use_legacy_prediction_loop": Legacy("drop it: there is one evaluation loop", accepts=_falsy,
                                         refuse="True: the legacy prediction loop is gone"),
    "jit_mode_eval": Legacy("use `torch_compile=True`", accepts=_falsy,
                            refuse="True: TorchScript evaluation was removed; use torch_compile=True"),
    "use_ipex": Legacy("use `torch_compile=True`", accepts=_falsy,
                       refuse="True: Intel Extension for PyTorch is not supported; use torch_compile=True"),
    "past_index": Legacy("drop it: models keep their own past state", accepts=lambda v: v == -1,
                         refuse="any value but -1: feeding `mems` back (Transformer-XL) is not supported"),
    "mp_parameters": Legacy("drop it", accepts=_falsy,
                            refuse="non-empty: SageMaker model parallelism is not supported"),
    "sharded_ddp": Legacy("use `fsdp=True`", accepts=_falsy,
                          refuse="non-empty: fairscale sharded DDP is gone; use fsdp=True"),
}
