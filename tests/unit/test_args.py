"""Unit tests for hf_lightning.args: transformers.TrainingArguments runs side by side as the reference.

The table itself is tested in test_args_table.py, the callbacks' settings types in test_settings.py."""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from enum import Enum
from pathlib import Path

import pytest
import torch
import transformers
from torch import nn
from transformers.debug_utils import DebugOption

from hf_lightning import _args_table as table
from hf_lightning.args import (
    Seq2SeqTrainingArguments,
    TrainingArguments,
    TranslatedArgs,
    ensure_args,
    legacy_table_markdown,
    migration_table_markdown,
    translate,
)
from hf_lightning.settings import (
    BestMetric,
    CheckpointSettings,
    CompileSettings,
    EvaluationSettings,
    LoaderSettings,
    OptimizerSettings,
)
from tests.unit.args_helpers import (
    HF_FIELDS,
    OWN_FIELDS,
    SEQ2SEQ_FIELDS,
    UNSUPPORTED_VALUES,
    _run_in_tmp,  # noqa: F401 - autouse: each test in its own working folder
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "migration.md"


def _declared_default(cls: type, name: str) -> object:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _outcome(cls: type, kwargs: dict) -> tuple[str, str] | None:
    try:
        cls(output_dir="unused", **kwargs)
    except Exception as err:  # noqa: BLE001 - the type and message are what is compared
        return type(err).__name__, str(err)
    return None


# ------------------------------------------------------------------------------------------------ fields and defaults
def test_is_a_transformers_training_arguments() -> None:
    assert issubclass(TrainingArguments, transformers.TrainingArguments)
    assert issubclass(Seq2SeqTrainingArguments, transformers.Seq2SeqTrainingArguments)
    assert issubclass(Seq2SeqTrainingArguments, TrainingArguments)


@pytest.mark.parametrize("ours, theirs", [(TrainingArguments, transformers.TrainingArguments),
                                          (Seq2SeqTrainingArguments, transformers.Seq2SeqTrainingArguments)])
def test_defaults_equal_transformers_for_every_field(ours: type, theirs: type) -> None:
    names = [f.name for f in dataclasses.fields(theirs)]
    assert [f.name for f in dataclasses.fields(ours)] == [*names, *OWN_FIELDS]
    for name in names:
        assert _declared_default(ours, name) == _declared_default(theirs, name), name
    a, b = ours(), theirs()
    for name in names:
        assert getattr(a, name) == getattr(b, name), name
    assert a.to_dict() == b.to_dict()  # the run's recorded config: our own fields only where they are set
    assert a.output_dir == "trainer_output"
    changed = ours(logging_dir="tb", torch_compile_scope="blocks").to_dict()
    assert {k: changed[k] for k in OWN_FIELDS} == {"logging_dir": "tb", "torch_compile_scope": "blocks"}


BAD_INPUTS = [
    {"fp16": True, "bf16": True, "use_cpu": True},
    {"fp16_full_eval": True, "bf16_full_eval": True, "use_cpu": True},
    {"bf16": True},
    {"eval_strategy": "sometimes"},
    {"save_strategy": "always"},
    {"logging_strategy": "loudly"},
    {"lr_scheduler_type": "zigzag"},
    {"optim": "adamw_imaginary"},
    {"hub_strategy": "never"},
    {"load_best_model_at_end": True, "eval_strategy": "steps", "save_strategy": "epoch"},
    {"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 2, "save_steps": 3},
    {"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 0.1, "save_steps": 5},
    {"logging_steps": 0},
    {"logging_steps": 2.5},
    {"eval_strategy": "steps", "eval_steps": 2.5},
    {"save_steps": 7.5},
    {"eval_strategy": "steps", "logging_steps": 0, "logging_strategy": "no"},
    {"warmup_steps": -1},
    {"dataloader_prefetch_factor": 2},
    {"lr_scheduler_type": "reduce_lr_on_plateau"},
    {"torch_empty_cache_steps": 0},
    {"include_num_input_tokens_seen": True},
    {"not_a_field": 1},
    {"fp16": True, "bf16": False, "eval_strategy": "epoch", "load_best_model_at_end": True, "save_strategy": "epoch"},
]


@pytest.mark.parametrize("kwargs", BAD_INPUTS, ids=lambda kw: ",".join(kw))
def test_validation_matches_transformers(kwargs: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _outcome(TrainingArguments, kwargs) == _outcome(transformers.TrainingArguments, kwargs)


def test_normalisation_matches_transformers() -> None:
    kwargs = {"eval_strategy": "steps", "logging_steps": 7, "load_best_model_at_end": True, "save_steps": 14,
              "report_to": "none", "torch_compile_mode": "default", "use_cpu": True, "debug": "underflow_overflow"}
    ours, theirs = TrainingArguments(**kwargs), transformers.TrainingArguments(**kwargs)
    assert ours.to_dict() == theirs.to_dict()
    assert (ours.eval_steps, ours.metric_for_best_model, ours.greater_is_better) == (7, "loss", False)
    assert ours.torch_compile and ours.torch_compile_backend == "inductor" and ours.dataloader_pin_memory is False


def test_hf_argument_parser_builds_ours() -> None:
    parser = transformers.HfArgumentParser(Seq2SeqTrainingArguments)
    with pytest.warns(FutureWarning, match="logging_dir"):
        (args,) = parser.parse_args_into_dataclasses(["--output_dir", "x", "--eval_strategy", "epoch", "--warmup_steps",
                                                      "0.1", "--predict_with_generate", "--logging_dir", "tb"])
    assert type(args) is Seq2SeqTrainingArguments
    assert (args.eval_strategy, args.warmup_steps, args.predict_with_generate, args.logging_dir) == (
        "epoch", 0.1, True, "tb")


def test_built_twice_and_drives_transformers_trainer_identically() -> None:
    """Two builds in one process work, and transformers.Trainer trains the same with ours as with its own."""

    class Line(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            y = self.a * x + self.b
            return {"loss": nn.functional.mse_loss(y, labels), "logits": y}

    g = torch.Generator().manual_seed(42)
    x = torch.randn(32, generator=g)
    data = [{"x": xi, "labels": 2 * xi + 3} for xi in x]
    kwargs = {"per_device_train_batch_size": 8, "num_train_epochs": 2, "learning_rate": 0.1, "use_cpu": True,
              "save_strategy": "no", "disable_tqdm": True, "logging_steps": 2, "report_to": "none"}
    results = []
    for i, cls in enumerate([TrainingArguments, transformers.TrainingArguments, TrainingArguments]):
        args = cls(output_dir=f"unused-{i}", **kwargs)
        assert args.device == torch.device("cpu") and args.world_size == 1
        model = Line()
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
        loss = trainer.train().training_loss
        results.append((model.a.item(), model.b.item(), loss, trainer.state.global_step))
    assert results[0] == results[1] == results[2]
    assert results[0][3] == 8


# ------------------------------------------------------------------------------------------------ legacy names
LEGACY_CASES = [
    ({"evaluation_strategy": "steps"}, {"eval_strategy": transformers.IntervalStrategy.STEPS}, "eval_strategy"),
    ({"warmup_ratio": 0.1}, {"warmup_steps": 0.1}, "warmup_steps"),
    ({"group_by_length": True}, {"train_sampling_strategy": "group_by_length"}, "train_sampling_strategy"),
    ({"per_gpu_train_batch_size": 4}, {"per_device_train_batch_size": 4}, "per_device_train_batch_size"),
    ({"per_gpu_eval_batch_size": 3}, {"per_device_eval_batch_size": 3}, "per_device_eval_batch_size"),
    ({"no_cuda": True}, {"use_cpu": True, "dataloader_pin_memory": False}, "use_cpu"),
    ({"logging_dir": "tb/run1"}, {"logging_dir": "tb/run1"}, "TENSORBOARD_LOGGING_DIR"),
    ({"include_inputs_for_metrics": True}, {"include_for_metrics": ["inputs"]}, "include_for_metrics"),
    ({"include_tokens_per_second": True}, {"include_num_input_tokens_seen": "all"}, "include_num_input_tokens_seen"),
    ({"push_to_hub_token": "tok"}, {"hub_token": "tok"}, "hub_token"),
    ({"push_to_hub_model_id": "m", "push_to_hub_organization": "org"}, {"hub_model_id": "org/m"}, "hub_model_id"),
    ({"fsdp_transformer_layer_cls_to_wrap": "BertLayer"},
     {"fsdp_config": {"transformer_layer_cls_to_wrap": "BertLayer"}}, "fsdp_config"),
    ({"fsdp_min_num_params": 10, "fsdp_config": {"version": 2}},
     {"fsdp_config": {"version": 2, "min_num_params": 10}}, "fsdp_config"),
    ({"split_batches": True}, {}, "accelerator_config"),
    ({"tpu_metrics_debug": True}, {"debug": [DebugOption.TPU_METRICS_DEBUG]}, "debug"),
    ({"adafactor": True}, {"optim": transformers.training_args.OptimizerNames.ADAFACTOR}, "optim"),
    ({"torchdynamo": "eager"}, {"torch_compile_backend": "eager", "torch_compile": True}, "torch_compile_backend"),
]


@pytest.mark.parametrize("legacy, expected, new_name", LEGACY_CASES, ids=lambda c: ",".join(c) if isinstance(c, dict)
                         else None)
def test_legacy_name_warns_and_maps(legacy: dict, expected: dict, new_name: str) -> None:
    with pytest.warns(FutureWarning) as record:
        args = TrainingArguments(output_dir="unused", **legacy)
    messages = " ".join(str(w.message) for w in record)
    for name in legacy:
        if name in table.LEGACY:
            assert f"`{name}`" in messages
    assert new_name in messages
    for name, value in expected.items():
        assert getattr(args, name) == value, name
    if "split_batches" in legacy:
        assert args.accelerator_config.split_batches is True


def test_warmup_ratio_gives_transformers_warmup_count() -> None:
    with pytest.warns(FutureWarning, match="warmup_steps"):
        args = TrainingArguments(warmup_ratio=0.1)
    assert args.get_warmup_steps(95) == transformers.TrainingArguments(warmup_steps=0.1).get_warmup_steps(95) == 10


@pytest.mark.parametrize("legacy", [{"overwrite_output_dir": True}, {"use_mps_device": True}, {"fp16_backend": "amp"},
                                    {"half_precision_backend": "auto"}, {"fp16_opt_level": "O2"},
                                    {"tpu_num_cores": 8}, {"ray_scope": "last"}, {"save_safetensors": True},
                                    {"use_legacy_prediction_loop": False}, {"jit_mode_eval": False},
                                    {"use_ipex": False}, {"past_index": -1}, {"mp_parameters": ""},
                                    {"sharded_ddp": ""}, {"no_cuda": False}, {"group_by_length": False}])
def test_legacy_name_without_effect_only_warns(legacy: dict) -> None:
    with pytest.warns(FutureWarning, match=next(iter(legacy))):
        args = TrainingArguments(output_dir="unused", **legacy)
    assert args.to_dict() == TrainingArguments(output_dir="unused").to_dict()


@pytest.mark.parametrize("legacy", [{"fp16_backend": "apex"}, {"half_precision_backend": "apex"},
                                    {"save_safetensors": False}, {"use_legacy_prediction_loop": True},
                                    {"jit_mode_eval": True}, {"use_ipex": True}, {"past_index": 0},
                                    {"mp_parameters": "--x 1"}, {"sharded_ddp": "simple"}, {"warmup_ratio": 1.5}])
def test_legacy_value_that_would_change_results_raises(legacy: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(legacy))):
        TrainingArguments(output_dir="unused", **legacy)


@pytest.mark.parametrize("kwargs", [{"evaluation_strategy": "steps", "eval_strategy": "epoch"},
                                    {"warmup_ratio": 0.1, "warmup_steps": 5},
                                    {"no_cuda": True, "use_cpu": False},
                                    {"group_by_length": True, "train_sampling_strategy": "sequential"}])
def test_legacy_name_conflicting_with_its_field_raises(kwargs: dict) -> None:
    old, new = kwargs
    with pytest.raises(ValueError, match=re.escape(f"`{old}`")) as err:
        TrainingArguments(output_dir="unused", **kwargs)
    assert f"`{new}`" in str(err.value)


def test_legacy_name_agreeing_with_its_field_is_fine() -> None:
    with pytest.warns(FutureWarning):
        args = TrainingArguments(evaluation_strategy="epoch", eval_strategy="epoch")
    assert args.eval_strategy == "epoch"


def test_legacy_none_means_not_set() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        args = TrainingArguments(per_gpu_train_batch_size=None, evaluation_strategy=None, logging_dir=None)
    assert args.per_device_train_batch_size == 8 and args.eval_strategy == "no"


# ------------------------------------------------------------------------------------------------ from_hf / ensure_args
def test_from_hf_round_trip_copies_every_field() -> None:
    hf = transformers.TrainingArguments(
        output_dir="out", eval_strategy="steps", eval_steps=5, save_steps=10, load_best_model_at_end=True,
        metric_for_best_model="accuracy", learning_rate=3e-4, lr_scheduler_type="cosine",
        lr_scheduler_kwargs={"num_cycles": 0.5}, include_for_metrics=["inputs"], seed=7, data_seed=3,
        accelerator_config={"even_batches": False}, report_to="tensorboard", warmup_steps=0.05, use_cpu=True)
    ours = TrainingArguments.from_hf(hf)
    assert type(ours) is TrainingArguments
    for name in HF_FIELDS:
        assert getattr(ours, name) == getattr(hf, name), name
    assert ours.to_dict() == hf.to_dict()
    ours.lr_scheduler_kwargs["num_cycles"] = 2.0
    assert hf.lr_scheduler_kwargs == {"num_cycles": 0.5}


def test_seq2seq_from_hf_and_ensure_args() -> None:
    config = transformers.GenerationConfig(max_length=7, num_beams=2)
    hf = transformers.Seq2SeqTrainingArguments(output_dir="out", predict_with_generate=True, generation_num_beams=3,
                                               generation_max_length=12, generation_config=config)
    ours = ensure_args(hf)
    assert type(ours) is Seq2SeqTrainingArguments
    for name in SEQ2SEQ_FIELDS:
        assert getattr(ours, name) == getattr(hf, name), name
    assert ours.to_dict() == hf.to_dict()
    with pytest.raises(ValueError, match="Seq2SeqTrainingArguments.from_hf"):
        TrainingArguments.from_hf(hf)


def test_from_hf_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="transformers.TrainingArguments"):
        TrainingArguments.from_hf({"output_dir": "x"})  # type: ignore[arg-type]


def test_ensure_args_accepts_none_ours_and_transformers() -> None:
    default = ensure_args(None)
    reference = transformers.Trainer(model=nn.Linear(1, 1)).args  # what transformers.Trainer(args=None) uses
    assert type(default) is TrainingArguments and default.output_dir == reference.output_dir == "tmp_trainer"
    ours = TrainingArguments(output_dir="x", seed=3)
    assert ensure_args(ours) is ours
    converted = ensure_args(transformers.TrainingArguments(output_dir="y", seed=5))
    assert type(converted) is TrainingArguments and (converted.output_dir, converted.seed) == ("y", 5)
    with pytest.raises(TypeError, match="hf_lightning.TrainingArguments"):
        ensure_args({"output_dir": "z"})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ translate
def _plain_values(section: dict) -> bool:
    return not any(isinstance(v, Enum) or (isinstance(v, list) and any(isinstance(x, Enum) for x in v))
                   for v in section.values())


def test_translate_defaults_routes_every_field() -> None:
    args = TrainingArguments(output_dir="out")
    out = translate(args)
    assert isinstance(out, TranslatedArgs)
    sections = {table.MODULE: out.module, table.DATAMODULE: out.datamodule, table.TRAINER: out.trainer,
                table.LOGGING: out.flow.as_dict(), table.CHECKPOINT: out.checkpoint.as_dict()}
    for name in HF_FIELDS + OWN_FIELDS:
        for route in table.routes_for(name):
            if route.target in sections:
                *groups, leaf = (route.name or name).split(".")
                section = sections[route.target]
                for group in groups:
                    section = section[group]
                assert leaf in section, name
    for section in sections.values():
        assert _plain_values(section)
    assert out.trainer == {"default_root_dir": "out", "max_steps": -1, "accumulate_grad_batches": 1,
                           "precision": "32-true", "deterministic": None, "accelerator": "auto"}
    assert out.module["optimization"] == OptimizerSettings().as_dict()  # transformers' defaults are the group's
    assert out.module["evaluation"] == {k: v for k, v in EvaluationSettings().as_dict().items()
                                        if k != "metric_threshold"}  # not a TrainingArguments field
    assert out.module["compilation"] == CompileSettings().as_dict()
    assert out.module["gradient_checkpointing"] is False
    assert out.datamodule["batch_size"] == out.datamodule["eval_batch_size"] == 8
    assert out.datamodule["sampling_strategy"] == "random" and out.datamodule["seed"] == 42
    assert out.checkpoint.output_dir == "out" and out.checkpoint == CheckpointSettings(output_dir="out")
    assert out.flow.report_to == [] and out.flow.logging_dir is None and out.extra == {}


def test_translate_realistic_fine_tuning_config() -> None:
    args = TrainingArguments(
        output_dir="ft", bf16=True, use_cpu=True, gradient_accumulation_steps=4, per_device_train_batch_size=16,
        per_device_eval_batch_size=32, eval_strategy="steps", eval_steps=50, save_steps=100, save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model="accuracy", warmup_steps=0.1, lr_scheduler_type="cosine",
        learning_rate=2e-5, weight_decay=0.01, dataloader_num_workers=2, seed=1, data_seed=2, full_determinism=True,
        disable_tqdm=True, activation_checkpointing=True, report_to=["tensorboard"], logging_steps=10,
        train_sampling_strategy="group_by_length", max_steps=1000, include_num_input_tokens_seen=True)
    out = translate(args)
    assert out.trainer == {"default_root_dir": "ft", "max_steps": 1000, "accumulate_grad_batches": 4,
                           "precision": "bf16-mixed", "deterministic": True, "accelerator": "cpu"}
    optimization = out.module["optimization"]
    assert {k: optimization[k] for k in ("learning_rate", "weight_decay", "lr_scheduler_type", "warmup_steps")} == {
        "learning_rate": 2e-5, "weight_decay": 0.01, "lr_scheduler_type": "cosine", "warmup_steps": 0.1}
    assert out.module["gradient_checkpointing"] is True
    assert {k: out.datamodule[k] for k in ("batch_size", "eval_batch_size", "seed", "data_seed",
                                           "sampling_strategy")} == {
        "batch_size": 16, "eval_batch_size": 32, "seed": 1, "data_seed": 2, "sampling_strategy": "group_by_length"}
    assert out.datamodule["loader"] == {**LoaderSettings().as_dict(), "num_workers": 2, "pin_memory": False}
    ckpt, log = out.checkpoint, out.flow
    assert (ckpt.save_strategy, ckpt.save_steps, ckpt.save_total_limit) == ("steps", 100, 2)
    assert (ckpt.load_best_model_at_end, ckpt.metric_for_best_model, ckpt.greater_is_better) == (
        True, "accuracy", True)
    assert (log.eval_strategy, log.eval_steps, log.logging_steps) == ("steps", 50, 10)
    assert log.report_to == ["tensorboard"] and log.include_num_input_tokens_seen == "all"
    assert BestMetric.resolve(log, ckpt) == BestMetric("accuracy", True)


@pytest.mark.parametrize("kwargs, key, expected", [
    ({"warmup_steps": 10.0}, "optimization.warmup_steps", 10),
    ({"warmup_steps": 0.25}, "optimization.warmup_steps", 0.25),
    ({"use_cpu": True}, "accelerator", "cpu"),
    ({"full_determinism": False}, "deterministic", None)])
def test_translate_conversions(kwargs: dict, key: str, expected: object) -> None:
    out = translate(TrainingArguments(**kwargs))
    group, _, leaf = key.rpartition(".")
    got = out.module[group][leaf] if group else out.trainer[key]
    assert got == expected and type(got) is type(expected)


def test_fp16_is_mixed_precision_on_a_gpu_and_fp32_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """As accelerate: fp16 autocast and loss scaling on a GPU only; on the CPU (use_cpu, or no CUDA) it trains in
    fp32 (Lightning's "16-mixed" would silently become bf16 there)."""
    on_gpu, on_cpu = TrainingArguments(fp16=True), TrainingArguments(fp16=True, use_cpu=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert translate(on_gpu).trainer["precision"] == "16-mixed"
    assert translate(on_cpu).trainer["precision"] == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert translate(on_gpu).trainer["precision"] == "32-true"
    assert translate(TrainingArguments(bf16=True, use_cpu=True)).trainer["precision"] == "bf16-mixed"


def test_translate_logging_dir_falls_back_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "~/tb")
    assert translate(TrainingArguments()).flow.logging_dir == os.path.expanduser("~/tb")
    with pytest.warns(FutureWarning):
        args = TrainingArguments(logging_dir="mine")
    assert translate(args).flow.logging_dir == "mine"


def test_translate_seq2seq_transformers_args_and_subclass_fields() -> None:
    config = transformers.GenerationConfig(num_beams=4)
    out = translate(Seq2SeqTrainingArguments(predict_with_generate=True, generation_max_length=20,
                                             generation_config=config))
    assert out.module["predict_with_generate"] is True and out.module["generation_max_length"] == 20
    assert out.module["generation_config"] == config.to_dict()
    assert translate(Seq2SeqTrainingArguments(generation_config=Path("gen"))).module["generation_config"] == "gen"
    assert translate(transformers.TrainingArguments(output_dir="hf", seed=9)).datamodule["seed"] == 9

    @dataclasses.dataclass
    class ScriptArgs(TrainingArguments):
        model_name: str = "tiny"

    assert translate(ScriptArgs(model_name="bert")).extra == {"model_name": "bert"}


def test_translate_returns_copies() -> None:
    args = TrainingArguments(include_for_metrics=["inputs"], lr_scheduler_kwargs={"num_cycles": 1})
    out = translate(args)
    out.module["evaluation"]["include_for_metrics"].append("loss")
    out.module["optimization"]["lr_scheduler_kwargs"]["num_cycles"] = 3
    assert args.include_for_metrics == ["inputs"] and args.lr_scheduler_kwargs == {"num_cycles": 1}


def test_translate_rejects_mirrored_fields_that_disagree() -> None:
    args = TrainingArguments()
    args.gradient_checkpointing = True  # changed after building: transformers reads activation_checkpointing
    with pytest.raises(ValueError, match="activation_checkpointing.*gradient_checkpointing"):
        translate(args)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_VALUES))
def test_unsupported_field_raises_naming_field_and_alternative(name: str) -> None:
    cls = Seq2SeqTrainingArguments if name in SEQ2SEQ_FIELDS else TrainingArguments
    args = cls(output_dir="unused", use_cpu=True, **{name: UNSUPPORTED_VALUES[name]})
    with pytest.raises(ValueError) as err:
        translate(args)
    assert f"- {name}=" in str(err.value)
    assert table.routes_for(name)[0].note in str(err.value)
    translate(cls(output_dir="unused", **{name: _declared_default(cls, name)}))  # the default is fine


def test_unsupported_fields_are_reported_together() -> None:
    args = TrainingArguments(push_to_hub=True, trackio_space_id="me/space", trackio_bucket_id="b")
    with pytest.raises(ValueError) as err:
        translate(args)
    lines = [line for line in str(err.value).splitlines() if line.startswith("- ")]
    order = [f.name for f in dataclasses.fields(args)]  # reported in the dataclass's field order
    assert [line.split("=")[0][2:] for line in lines] == sorted(["trackio_space_id", "trackio_bucket_id", "push_to_hub"],
                                                                key=order.index)
    assert "'b'" in str(err.value)


# ------------------------------------------------------------------------------------------------ docs
def _between(text: str, begin: str, end: str) -> str:
    start = text.index(begin)
    return text[text.index("\n", start) + 1:text.index(end)]


def test_migration_table_has_a_row_per_route() -> None:
    rows = migration_table_markdown().splitlines()[2:]
    expected = sum(len(table.routes_for(n)) for n in [*HF_FIELDS, *SEQ2SEQ_FIELDS, *OWN_FIELDS])
    assert len(rows) == expected
    assert all(row.count(" | ") == 3 for row in rows)
    assert "| `fp16` | `lightning.Trainer` | `precision`: " in migration_table_markdown()


def test_doc_tables_match_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "from hf_lightning import Trainer, TrainingArguments" in text
    assert _between(text, "<!-- BEGIN FIELD TABLE", "<!-- END FIELD TABLE -->") == migration_table_markdown()
    assert _between(text, "<!-- BEGIN LEGACY TABLE", "<!-- END LEGACY TABLE -->") == legacy_table_markdown()


@pytest.mark.parametrize("cls", [TrainingArguments, Seq2SeqTrainingArguments])
def test_the_repr_hides_the_hub_token_as_transformers_repr_does(cls) -> None:
    args = cls(output_dir="unused", hub_token="hf_secret_value")
    theirs = transformers.TrainingArguments(output_dir="unused", hub_token="hf_secret_value")
    assert "hf_secret_value" not in repr(args) and "hf_secret_value" not in repr(theirs)
    assert repr(args) == str(args) and "<HUB_TOKEN>" in repr(args)
