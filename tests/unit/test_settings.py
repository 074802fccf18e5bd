"""Unit tests for hf_lightning.settings: the callbacks' and HFModule's settings types are the table's routes, the
components take the translated settings (the best metric resolved from both), and flat model keys of earlier releases
move into their groups."""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from pathlib import Path

import pytest
import transformers

import hf_lightning
from hf_lightning import _args_table as table
from hf_lightning.args import TrainingArguments, callback_arguments, translate
from hf_lightning.groups import DATA, MODEL
from hf_lightning.settings import BestMetric, CheckpointSettings, FlowSettings
from tests.unit.args_helpers import (
    HF_FIELDS,
    OWN_FIELDS,
    _run_in_tmp,  # noqa: F401 - autouse: each test in its own working folder
)


@pytest.mark.parametrize(("target", "settings_type", "component"), [
    (table.LOGGING, FlowSettings, "HFFlow"), (table.CHECKPOINT, CheckpointSettings, "HFCheckpoint")])
def test_settings_types_are_the_table(target: str, settings_type: type, component: str) -> None:
    """The table is what the code uses: a callback's settings type has exactly the fields routed to it, and the
    callback takes each as a keyword (for yaml) with transformers' default."""
    routed = {r.name or f for f in [*HF_FIELDS, *OWN_FIELDS] for r in table.routes_for(f) if r.target == target}
    assert {f.name for f in dataclasses.fields(settings_type)} == routed
    hf_defaults = {f.name: f.default for f in dataclasses.fields(transformers.TrainingArguments)}
    for f in dataclasses.fields(settings_type):
        if f.name in hf_defaults and f.name not in ("output_dir", "report_to"):
            assert f.default == hf_defaults[f.name], f.name
    params = inspect.signature(getattr(hf_lightning.callbacks, component).__init__).parameters
    assert routed <= set(params) and "settings" in params


def test_components_take_the_translation_and_never_build_arguments(tmp_path: Path) -> None:
    """The HF-style Trainer hands each callback its translated settings and its own arguments, unchanged: what
    transformers' callbacks see is the user's object, and the callbacks read only their settings."""
    args = TrainingArguments(output_dir=str(tmp_path), save_steps=7, logging_steps=3, report_to="none")
    out = translate(args)
    flow = hf_lightning.callbacks.HFFlow(settings=out.flow, args=args)
    checkpoint = hf_lightning.callbacks.HFCheckpoint(settings=out.checkpoint)
    assert flow.args is args and flow.settings.logging_steps == 3 and checkpoint.settings.save_steps == 7
    # The Lightning door: the arguments are built from the two settings, and transformers validates the combination.
    built = callback_arguments(FlowSettings(eval_strategy="steps", eval_steps=5),
                               CheckpointSettings(save_steps=10, load_best_model_at_end=True))
    assert (built.save_steps, built.eval_steps, built.metric_for_best_model, built.greater_is_better) == \
        (10, 5, "loss", False)
    with pytest.raises(ValueError, match="round multiple of the evaluation steps"):
        callback_arguments(FlowSettings(eval_strategy="steps", eval_steps=4),
                           CheckpointSettings(save_steps=10, load_best_model_at_end=True))
    with pytest.raises(ValueError, match="set it in one place"):
        BestMetric.resolve(FlowSettings(metric_for_best_model="loss"), CheckpointSettings(metric_for_best_model="f1"))
    assert BestMetric.resolve(FlowSettings(), CheckpointSettings(metric_for_best_model="f1")) == BestMetric("f1", True)


@pytest.mark.parametrize("metric", ["mse", "eval_rmse", "wer", "perplexity"])
def test_an_error_metric_left_to_transformers_direction_is_warned_about_in_both_doors(metric):
    """transformers maximises any metric not ending in 'loss' when greater_is_better is unset: kept (the direction
    equals transformers'), with a warning that names the fix; no warning once the direction is given."""
    with pytest.warns(UserWarning, match=r"greater_is_better=False"):
        ours = TrainingArguments("out", metric_for_best_model=metric, use_cpu=True)
    theirs = transformers.TrainingArguments("out", metric_for_best_model=metric, use_cpu=True)
    assert ours.greater_is_better is theirs.greater_is_better is True
    with pytest.warns(UserWarning, match=r"greater_is_better=False"):
        best = BestMetric.resolve(FlowSettings(metric_for_best_model=metric), CheckpointSettings())
    assert best.greater_is_better is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainingArguments("out", metric_for_best_model=metric, greater_is_better=False, use_cpu=True)
        BestMetric.resolve(FlowSettings(metric_for_best_model=metric, greater_is_better=False), CheckpointSettings())
        TrainingArguments("out", metric_for_best_model="accuracy", use_cpu=True)
        TrainingArguments("out", metric_for_best_model="eval_loss", use_cpu=True)


@pytest.mark.parametrize(("grouping", "component", "group"), [
    *[(MODEL, hf_lightning.HFModule, g) for g in MODEL.groups], *[(DATA, hf_lightning.HFDataModule, g) for g in DATA.groups]])
def test_component_groups_are_the_table(grouping, component, group: str) -> None:
    """HFModule's and HFDataModule's grouped settings hold exactly the fields the table routes to ``<group>.<field>``
    (plus hf_lightning's own ``metric_threshold``), with transformers' defaults, and the component takes the group."""
    settings_type = grouping.groups[group]
    target = table.MODULE if grouping is MODEL else table.DATAMODULE
    routed = {r.name.split(".", 1)[1] for f in [*HF_FIELDS, *OWN_FIELDS] for r in table.routes_for(f)
              if r.target == target and r.name.startswith(f"{group}.")}
    own = {"metric_threshold"} if group == "evaluation" else set()
    assert {f.name for f in dataclasses.fields(settings_type)} == routed | own
    translated = translate(transformers.TrainingArguments("out"))
    theirs = (translated.module if grouping is MODEL else translated.datamodule)[group]
    assert {k: v for k, v in settings_type().as_dict().items() if k not in own} == theirs
    assert inspect.signature(component.__init__).parameters[group].default == settings_type()
    assert all(grouping.group_of[name] == group for name in routed | own)


def test_flat_keys_of_a_config_move_into_their_groups() -> None:
    init_args = {"model": "minilm", "learning_rate": 1e-4, "torch_compile": True, "evaluation": {"metric_threshold": 0.4},
                 "eval_accumulation_steps": 2}
    assert MODEL.upgrade_config(init_args) == ["learning_rate", "torch_compile", "eval_accumulation_steps"]
    assert init_args == {"model": "minilm", "optimization": {"learning_rate": 1e-4},
                         "compilation": {"torch_compile": True},
                         "evaluation": {"metric_threshold": 0.4, "eval_accumulation_steps": 2}}
    assert MODEL.upgrade_config(init_args) == []  # already grouped
    with pytest.raises(ValueError, match=r"keep model\.init_args\.optimization\.learning_rate only"):
        MODEL.upgrade_config({"learning_rate": 1e-4, "optimization": {"learning_rate": 1e-3}})
    data = {"dataset": "movie_reviews", "num_workers": 2, "batch_size": 8}
    assert DATA.upgrade_config(data) == ["num_workers"]
    assert data == {"dataset": "movie_reviews", "batch_size": 8, "loader": {"num_workers": 2}}


def test_an_unknown_log_level_is_refused_when_the_flow_is_built():
    """HFFlow(log_level=...) takes transformers' levels (and "passive"), checked when it is built, as transformers'
    TrainingArguments checks them, not with a KeyError once training starts."""
    from hf_lightning.callbacks import HFFlow

    with pytest.raises(ValueError, match=r"log_level='loud' is not a log level: choose one of \[.*'passive'"):
        HFFlow(log_level="loud")
    with pytest.raises(ValueError, match=r"log_level_replica='x' is not a log level"):
        HFFlow(log_level_replica="x")
    assert HFFlow(log_level="info").settings.log_level == "info"


@pytest.mark.parametrize(("component", "kwargs", "error"), [
    ("HFFlow", {"eval_strategy": "stepz"}, r"eval_strategy='stepz' is unknown\. Did you mean 'steps'\?"),
    ("HFFlow", {"logging_strategy": "every"}, r"logging_strategy='every' is unknown.*\['epoch', 'no', 'steps'\]"),
    ("HFFlow", {"logging_steps": 0}, r"logging_steps=0 with logging_strategy='steps'"),
    ("HFFlow", {"metric_for_best_model": 3}, r"metric_for_best_model=3 must be the name of an evaluation metric"),
    ("HFCheckpoint", {"save_strategy": "epochs"}, r"save_strategy='epochs' is unknown\. Did you mean 'epoch'\?"),
    ("HFCheckpoint", {"metric_for_best_model": ["eval_loss"]}, r"metric_for_best_model=\['eval_loss'\] must be"),
])
def test_a_setting_transformers_refuses_is_refused_when_the_callback_is_built(component, kwargs, error):
    """A typo in a yaml config fails when the callback is built (before the model loads), naming the setting; the
    same values in transformers' TrainingArguments fail too."""
    from hf_lightning.callbacks.checkpoint import HFCheckpoint
    from hf_lightning.callbacks.hf_flow import HFFlow

    with pytest.raises((ValueError, TypeError), match=error):
        {"HFFlow": HFFlow, "HFCheckpoint": HFCheckpoint}[component](**kwargs)
    with pytest.raises((ValueError, TypeError, AttributeError)):
        transformers.TrainingArguments("unused", report_to=[], **kwargs)
