"""TrainingArguments -> Lightning strategies (the hf_lightning/strategies package), in this process.

FSDP1 and DeepSpeed run on CUDA only: here their translation is checked (the strategy objects, the DeepSpeed config
with transformers' "auto" values filled) and their refusal of CPU; scripts/gpu_checks.sh runs them on a GPU machine.
"""

from __future__ import annotations

import functools
import importlib
from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

import hf_lightning
from hf_lightning import strategies as S
from tests.helpers.tiny import RegressionModel

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN_2x2 = {"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0"}


def _args(**kwargs) -> hf_lightning.TrainingArguments:
    return hf_lightning.TrainingArguments("unused", use_cpu=True, report_to=[], **kwargs)


def _bert():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=64))


# ----------------------------------------------------------------------------------------------- layout, DDP
@pytest.mark.parametrize("env, layout", [
    ({}, (1, 1)),
    (TORCHRUN_2x2, (2, 2)),
    ({"SLURM_NTASKS": "6", "SLURM_NNODES": "3", "SLURM_NTASKS_PER_NODE": "2(x3)", "SLURM_JOB_NAME": "train"}, (2, 3)),
    ({"SLURM_NTASKS": "4", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "train"}, (2, 2)),
    ({"SLURM_NTASKS": "4", "SLURM_JOB_NAME": "bash"}, (1, 1)),  # an interactive allocation: one process
])
def test_launch_layout(env, layout):
    assert S.launch_layout(env) == layout


def test_ddp_fields_become_ddp_strategy_keywords():
    args = _args(ddp_find_unused_parameters=False, ddp_bucket_cap_mb=50, ddp_broadcast_buffers=False,
                 ddp_static_graph=True, ddp_timeout=60)
    args.ddp_backend = "gloo"  # set afterwards: building arguments with a backend starts accelerate's process group
    kwargs = S.trainer_kwargs(args, RegressionModel(), 10, env=TORCHRUN_2x2)
    strategy = kwargs.pop("strategy")
    assert kwargs == {"devices": 2, "num_nodes": 2}
    assert isinstance(strategy, DDPStrategy)
    assert strategy._ddp_kwargs == {"find_unused_parameters": False, "bucket_cap_mb": 50, "broadcast_buffers": False,
                                    "static_graph": True}
    assert (strategy.process_group_backend, strategy._timeout) == ("gloo", timedelta(seconds=60))


def test_find_unused_parameters_defaults_as_transformers():
    assert S.ddp_kwargs(_args(), RegressionModel())["find_unused_parameters"] is True  # not a PreTrainedModel
    assert S.ddp_kwargs(_args(), _bert())["find_unused_parameters"] is True
    assert S.ddp_kwargs(_args(activation_checkpointing=True), _bert())["find_unused_parameters"] is False


def test_one_process_keeps_lightning_defaults():
    assert S.trainer_kwargs(_args(), RegressionModel(), env={}) == {"strategy": "auto", "devices": 1, "num_nodes": 1}


def test_accelerator_config_values_that_change_results_raise():
    # one process: nothing to split or dispatch (transformers trains as without them)
    for key in ("split_batches", "dispatch_batches"):
        assert S.trainer_kwargs(_args(accelerator_config={key: True}), env={})["strategy"] == "auto"
        with pytest.raises(ValueError, match=key):
            S.trainer_kwargs(_args(accelerator_config={key: True}), env=TORCHRUN_2x2)
    with pytest.raises(ValueError, match="use_seedable_sampler"):
        S.trainer_kwargs(_args(accelerator_config={"use_seedable_sampler": False}), env={})


# ----------------------------------------------------------------------------------------------- FSDP
_FSDP_CASES = [
    {"fsdp": "full_shard auto_wrap offload", "fsdp_config": {"transformer_layer_cls_to_wrap": "BertLayer"}},
    {"fsdp": "shard_grad_op"},
    {"fsdp": True, "fsdp_config": {"auto_wrap_policy": "SIZE_BASED_WRAP", "min_num_params": 1000,
                                   "activation_checkpointing": True, "state_dict_type": "SHARDED_STATE_DICT"}},
    {"fsdp": "hybrid_shard", "fsdp_config": {"version": 1, "backward_prefetch": "backward_pre",
                                             "forward_prefetch": "true", "limit_all_gathers": True}},
]


def _as_plugin_args(settings: dict) -> dict:
    """Our settings in the shape of transformers' ``args.fsdp_plugin_args``."""
    out = {k: v for k, v in settings.items() if k not in ("version", "transformer_layer_cls_to_wrap",
                                                         "min_num_params", "cpu_offload", "activation_checkpointing")}
    out["fsdp_version"] = settings["version"]
    if settings["cpu_offload"]:
        out["cpu_offload"] = True
    if settings["auto_wrap_policy"] == "SIZE_BASED_WRAP" and settings["min_num_params"] > 0:
        out["min_num_params"] = settings["min_num_params"]
    if settings["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP" and settings["transformer_layer_cls_to_wrap"]:
        out["transformer_cls_names_to_wrap"] = ",".join(settings["transformer_layer_cls_to_wrap"])
    if settings["activation_checkpointing"]:
        out["activation_checkpointing"] = True
    return out


@pytest.mark.parametrize("case", _FSDP_CASES, ids=["full_shard_offload", "shard_grad_op", "size_based", "hybrid_v1"])
def test_fsdp_config_is_read_as_transformers_reads_it(case):
    args = _args(**case)
    assert _as_plugin_args(S.fsdp_settings(args.fsdp_config)) == args.fsdp_plugin_args


def test_fsdp2_strategy_from_arguments():
    args = _args(fsdp="shard_grad_op offload", fsdp_config={"state_dict_type": "SHARDED_STATE_DICT"})
    kwargs = S.trainer_kwargs(args, _bert(), 10, env=TORCHRUN_2x2)
    strategy = kwargs["strategy"]
    assert type(strategy) is S.HFFSDP2Strategy and (kwargs["devices"], kwargs["num_nodes"]) == (2, 2)
    assert strategy.fsdp_settings["reshard_after_forward"] is False and strategy.fsdp_settings["cpu_offload"] is True
    assert strategy._save_distributed_checkpoint is True and strategy._tensor_parallel_size == 1
    assert S.HFFSDP2Strategy()._save_distributed_checkpoint is False  # FULL_STATE_DICT, transformers' default


def test_fsdp1_strategy_from_arguments_and_model():
    from torch.distributed.fsdp import BackwardPrefetch, ShardingStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer

    args = _args(fsdp="hybrid_shard offload", fsdp_config={"version": 1, "backward_prefetch": "backward_pre",
                                                           "forward_prefetch": True, "activation_checkpointing": True})
    strategy = S.trainer_kwargs(args, _bert(), 10, env=TORCHRUN_2x2)["strategy"]
    assert type(strategy) is S.HFFSDPStrategy
    assert strategy.sharding_strategy is ShardingStrategy.HYBRID_SHARD and strategy.cpu_offload.offload_params
    assert strategy.kwargs["backward_prefetch"] is BackwardPrefetch.BACKWARD_PRE
    assert strategy.kwargs["forward_prefetch"] and strategy.kwargs["sync_module_states"]
    assert strategy._state_dict_type == "full"
    strategy.apply_fsdp_config(hf_lightning.HFModule(model=_bert()))  # what setup() does with the module
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy) and set(policy._module_classes) == {BertLayer, BertEmbeddings}
    assert "auto_wrap_policy" in strategy._activation_checkpointing_kwargs  # the same layer classes


def test_fsdp1_size_policy_and_clear_errors():
    strategy = S.HFFSDPStrategy(fsdp_config={"auto_wrap_policy": "SIZE_BASED_WRAP", "min_num_params": 500})
    strategy.apply_fsdp_config(_bert())
    assert isinstance(strategy.kwargs["auto_wrap_policy"], functools.partial)
    assert strategy.kwargs["auto_wrap_policy"].keywords == {"min_num_params": 500}
    with pytest.raises(ValueError, match=r"names \['LlamaDecoderLayer'\], which the model does not contain"):
        S.HFFSDPStrategy(fsdp_config={"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}).apply_fsdp_config(
            _bert())
    with pytest.raises(ValueError, match="hybrid sharding needs a wrap policy"):
        S.HFFSDPStrategy(fsdp_config={"reshard_after_forward": "hybrid_shard", "auto_wrap_policy": "NO_WRAP"}
                         ).apply_fsdp_config(_bert())
    with pytest.raises(ValueError, match="use HFFSDPStrategy"):
        S.HFFSDP2Strategy(fsdp_config={"version": 1})
    with pytest.raises(ValueError, match="backward_prefetch"):
        S.HFFSDPStrategy(fsdp_config={"backward_prefetch": "sometimes"})


def test_fsdp1_refuses_cpu_naming_fsdp2():
    trainer = L.Trainer(strategy=S.HFFSDPStrategy(), accelerator="cpu", devices=1, logger=False)
    with pytest.raises(ValueError, match="FSDP1.*CUDA only.*FSDP2"):
        trainer.strategy.setup_environment()


# ----------------------------------------------------------------------------------------------- DeepSpeed
#: DeepSpeed's getting-started config: AdamW, fp16, ZeRO stage 2, a global batch of 16.
TUTORIAL = {"train_batch_size": 16, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
            "fp16": {"enabled": True}, "zero_optimization": {"stage": 2}}
AUTO = {
    "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto", "bf16": {"enabled": "auto"},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                       "warmup_num_steps": "auto", "total_num_steps": "auto"}},
    "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}, "reduce_bucket_size": "auto",
                          "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto"},
}


@pytest.fixture()
def deepspeed():
    return importlib.import_module("deepspeed")  # the `deepspeed` extra (in dev): configs and strategy on CPU


@pytest.mark.parametrize("batch, accumulation", [(16, 1), (8, 2)])
def test_tutorial_deepspeed_config_works_unchanged(deepspeed, batch, accumulation):
    args = _args(deepspeed=TUTORIAL, fp16=True, learning_rate=1e-3, per_device_train_batch_size=batch,
                 gradient_accumulation_steps=accumulation)
    strategy = S.trainer_kwargs(args, _bert(), 100, env={})["strategy"]
    assert type(strategy) is S.HFDeepSpeedStrategy
    config = strategy.config
    assert config["zero_optimization"] == {"stage": 2} and config["fp16"] == {"enabled": True}
    assert config["optimizer"] == TUTORIAL["optimizer"] and config["train_batch_size"] == 16
    assert config["train_micro_batch_size_per_gpu"] == batch
    assert "gradient_accumulation_steps" not in config  # Lightning sets it from accumulate_grad_batches
    assert TUTORIAL["zero_optimization"] == {"stage": 2}  # the caller's dict is not modified


def test_deepspeed_config_contradicting_the_arguments_raises(deepspeed):
    args = _args(deepspeed=TUTORIAL, fp16=True, learning_rate=1e-3, per_device_train_batch_size=4)
    with pytest.raises(ValueError, match="train_batch_size=16 vs hf train_batch_size"):
        S.trainer_kwargs(args, _bert(), 100, env={})


def test_deepspeed_auto_values_are_filled_from_the_arguments(deepspeed):
    args = _args(deepspeed=AUTO, bf16=True, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                 learning_rate=3e-4, weight_decay=0.01, max_grad_norm=0.5, warmup_steps=10)
    config = S.deepspeed_config(args, _bert(), num_training_steps=100)
    assert S.deepspeed._auto_keys(config) == []
    assert (config["train_micro_batch_size_per_gpu"], config["train_batch_size"]) == (4, 8)
    assert config["gradient_clipping"] == 0.5 and config["bf16"] == {"enabled": True}
    assert config["optimizer"]["params"] == {"lr": 3e-4, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}
    assert config["scheduler"]["params"] == {"warmup_min_lr": 0, "warmup_max_lr": 3e-4, "warmup_num_steps": 10,
                                             "total_num_steps": 100}
    zero = config["zero_optimization"]  # hidden_size 32: transformers' bucket rules
    assert (zero["reduce_bucket_size"], zero["stage3_prefetch_bucket_size"],
            zero["stage3_param_persistence_threshold"]) == (32 * 32, int(0.9 * 32 * 32), 320)
    inference = S.deepspeed_config(args, _bert(), inference=True)
    assert "optimizer" not in inference and "scheduler" not in inference


def test_deepspeed_strategy_refuses_auto_and_cpu(deepspeed):
    with pytest.raises(ValueError, match=r"\['gradient_clipping'\] are 'auto'"):
        S.HFDeepSpeedStrategy(config={"zero_optimization": {"stage": 2}, "gradient_clipping": "auto"})
    trainer = L.Trainer(strategy=S.HFDeepSpeedStrategy(config=TUTORIAL), accelerator="cpu", devices=1, logger=False)
    with pytest.raises(RuntimeError, match="only supported on CUDA"):
        trainer.strategy.setup_environment()


# ----------------------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("recipe", sorted((ROOT / "configs/strategies").glob("*.yaml")), ids=lambda p: p.name)
def test_strategy_recipes_build_their_strategy(recipe):
    spec = yaml.safe_load(recipe.read_text())["trainer"]["strategy"]
    module, _, name = spec["class_path"].rpartition(".")
    strategy = getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))
    assert isinstance(strategy, L.pytorch.strategies.Strategy)


# ----------------------------------------------------------------------------------------------- step helpers
def test_clipping_follows_the_strategy_type():
    assert S.clipper_for(S.HFFSDPStrategy()) is S.steps._clip_fsdp1
    assert S.clipper_for(DDPStrategy()) is S.steps._clip_local and S.clipper_for(None) is S.steps._clip_local
    assert S.clipper_for(S.HFFSDP2Strategy()) is S.steps._clip_local  # DTensor gradients: torch's norm, made whole


def test_clipping_norms_the_parameters_of_the_module_it_is_given():
    """The parameter list kept on the optimizer belongs to one module: a new module stepped by the same optimizer (the
    HF-style Trainer keeps its optimizer across train() calls) has its own parameters normed, as
    torch.nn.utils.clip_grad_norm_(model.parameters()) would."""
    class Holder(L.LightningModule):
        def __init__(self, *layers: nn.Module) -> None:
            super().__init__()
            self.layers = nn.ModuleList(layers)

    shared, extra = nn.Linear(3, 3), nn.Linear(3, 1)
    optimizer = torch.optim.SGD(shared.parameters(), lr=0.1)
    for module in (Holder(shared), Holder(shared, extra)):
        for p in module.parameters():
            p.grad = torch.ones_like(p)
        expected = torch.nn.utils.get_total_norm([p.grad for p in module.parameters()])
        assert torch.equal(S.clip_grad_norm(module, optimizer, 0.0), expected)


def test_which_strategies_gather_parameters_in_each_forward():
    assert S.forward_is_collective(S.HFFSDP2Strategy()) and S.forward_is_collective(S.HFFSDPStrategy())
    assert not S.forward_is_collective(DDPStrategy())


def test_deepspeed_stage_3_gathers_parameters_in_each_forward(deepspeed):
    assert S.forward_is_collective(S.HFDeepSpeedStrategy(config={"zero_optimization": {"stage": 3}}))
    assert not S.forward_is_collective(S.HFDeepSpeedStrategy(config=TUTORIAL))


def test_local_clipping_is_torchs_clip_grad_norm():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    a(torch.randn(8, 4)).pow(2).sum().backward()
    for p, q in zip(a.parameters(), b.parameters()):
        q.grad = p.grad.clone()
    module = L.LightningModule()
    module.layer = a
    norm = S.clip_grad_norm(module, None, 0.5)
    expected = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.5)
    assert torch.equal(norm, expected)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()))


def test_scaler_state_round_trip():
    from lightning.pytorch.plugins.precision import MixedPrecision

    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    trainer = L.Trainer(accelerator="cpu", plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)], logger=False)
    state = S.scaler_state(trainer)
    assert state is not None and state["scale"] == 1024.0
    state["scale"] = 8.0
    assert S.load_scaler_state(trainer, state) and scaler.get_scale() == 8.0
    plain = L.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False)
    assert S.scaler_state(plain) is None and not S.load_scaler_state(plain, state)


# ----------------------------------------------------------------------------------------------- FSDP2 CPU offload
def test_fsdp2_cpu_offload_moves_only_what_fsdp_does_not_manage(tmp_path):
    """With ``cpu_offload`` the strategy's device placement leaves FSDP2's parameter shards on the CPU (FSDP2 refuses
    shards that were moved to the GPU) and moves everything else: modules outside the sharded model, buffers.
    The target device here is ``meta``, which any tensor can move to on a machine without a GPU."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        holder = nn.ModuleDict({"model": nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), "head": nn.Linear(2, 2)})
        holder.register_buffer("scale", torch.ones(1))
        strategy = S.HFFSDP2Strategy(fsdp_config={"cpu_offload": True, "auto_wrap_policy": "NO_WRAP"})
        S.fsdp.shard_fsdp2(holder, init_device_mesh("cpu", (1,)), strategy.fsdp_settings)
        strategy.model, strategy.parallel_devices = holder, [torch.device("meta")]
        strategy.model_to_device()
        shards = list(holder["model"].parameters())
        assert shards and all(isinstance(p, DTensor) and p.device.type == "cpu" for p in shards)
        assert all(p.device.type == "meta" for p in holder["head"].parameters()) and holder.scale.device.type == "meta"
        # without offload, Lightning's plain move applies to everything
        plain = S.HFFSDP2Strategy(fsdp_config={"auto_wrap_policy": "NO_WRAP"})
        other = nn.ModuleDict({"model": nn.Linear(2, 2)})
        S.fsdp.shard_fsdp2(other, init_device_mesh("cpu", (1,)), plain.fsdp_settings)
        plain.model, plain.parallel_devices = other, [torch.device("meta")]
        plain.model_to_device()
        assert all(p.device.type == "meta" for p in other.parameters())
    finally:
        dist.destroy_process_group()


def test_generation_syncs_ranks_when_the_strategy_shards_the_forward(deepspeed):
    """Seq2seq ``predict_with_generate`` under ZeRO-3 / FSDP on several processes keeps every rank stepping
    ``generate`` (``synced_gpus``), decided from the strategy: transformers' global DeepSpeed flag stays unset here."""
    from types import SimpleNamespace

    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    zero3 = S.HFDeepSpeedStrategy(config={"zero_optimization": {"stage": 3}})
    assert not is_deepspeed_zero3_enabled()
    assert S.generation_is_synced(SimpleNamespace(world_size=2, strategy=zero3))
    assert S.generation_is_synced(SimpleNamespace(world_size=2, strategy=S.HFFSDP2Strategy()))
    assert not S.generation_is_synced(SimpleNamespace(world_size=1, strategy=zero3))  # one process: nothing to sync
    assert not S.generation_is_synced(SimpleNamespace(world_size=2, strategy=S.HFDeepSpeedStrategy(config=TUTORIAL)))
    assert not S.generation_is_synced(SimpleNamespace(world_size=2, strategy=DDPStrategy()))
