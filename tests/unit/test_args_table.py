"""Unit tests for hf_lightning._args_table: every transformers field routed to a known target whose component takes
the keyword, and the legacy names really gone from transformers."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import lightning
import pytest
import transformers

import hf_lightning
from hf_lightning import _args_table as table
from hf_lightning.args import Seq2SeqTrainingArguments, TrainingArguments, translate
from tests.unit.args_helpers import (
    HF_FIELDS,
    OWN_FIELDS,
    SEQ2SEQ_FIELDS,
    UNSUPPORTED_VALUES,
    _run_in_tmp,  # noqa: F401 - autouse: each test in its own working folder
)


# ------------------------------------------------------------------------------------------------ the table
def test_table_covers_every_field_of_installed_transformers_exactly() -> None:
    assert set(table.ROUTES) == set(HF_FIELDS), "transformers changed TrainingArguments: update _args_table.ROUTES"
    assert list(table.ROUTES) == HF_FIELDS  # same order, so the doc table reads like transformers' docs
    assert set(table.SEQ2SEQ_ROUTES) == set(SEQ2SEQ_FIELDS)
    ours_only = {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments)} - set(HF_FIELDS) - set(SEQ2SEQ_FIELDS)
    assert set(table.EXTRA_ROUTES) == ours_only == set(OWN_FIELDS)
    assert not set(table.LEGACY) & (set(HF_FIELDS) | set(SEQ2SEQ_FIELDS))


def test_every_route_names_a_known_target() -> None:
    targets = {table.MODULE, table.DATAMODULE, table.TRAINER, table.STRATEGY, table.FACADE, table.UNSUPPORTED,
               table.CHECKPOINT, table.LOGGING}
    for name in [*HF_FIELDS, *SEQ2SEQ_FIELDS, *OWN_FIELDS]:
        for route in table.routes_for(name):
            assert route.target in targets, name
            assert route.target != table.UNSUPPORTED or route.note, f"{name}: unsupported needs the alternative"


def test_unsupported_value_table_is_complete() -> None:
    unsupported = {name for name in [*HF_FIELDS, *SEQ2SEQ_FIELDS] for r in table.routes_for(name)
                   if r.target == table.UNSUPPORTED}
    assert unsupported == set(UNSUPPORTED_VALUES)


def test_trainer_routes_are_lightning_trainer_keywords() -> None:
    names = {r.name for f in HF_FIELDS for r in table.routes_for(f) if r.target == table.TRAINER}
    assert names == {"default_root_dir", "max_steps", "accumulate_grad_batches", "precision", "deterministic",
                     "accelerator"}
    assert names <= set(inspect.signature(lightning.Trainer.__init__).parameters)
    lightning.Trainer(**translate(TrainingArguments(output_dir=str(Path("unused")))).trainer, logger=False)


def _contract(cls: type, target: str, field_names: list[str]) -> None:
    """The component accepts every keyword that translate() sends it (``group.field``: the keyword ``group``, whose
    default settings object has the field)."""
    params = inspect.signature(cls.__init__).parameters
    wanted = {r.name or f for f in field_names for r in table.routes_for(f) if r.target == target}
    missing = set()
    for name in wanted:
        group, _, leaf = name.rpartition(".")
        if not group:
            missing |= {name} - set(params)
        elif group not in params or leaf not in {f.name for f in dataclasses.fields(params[group].default)}:
            missing.add(name)
    assert not missing, f"{cls.__name__} lacks keywords {sorted(missing)} that translate() sends it"


def test_contract_hfmodule_accepts_module_routes() -> None:
    _contract(hf_lightning.HFModule, table.MODULE, HF_FIELDS)


def test_contract_seq2seq_module_accepts_seq2seq_routes() -> None:
    from hf_lightning.modules.seq2seq import Seq2SeqModule

    _contract(Seq2SeqModule, table.MODULE, SEQ2SEQ_FIELDS)


def test_contract_hfdatamodule_accepts_datamodule_routes() -> None:
    _contract(hf_lightning.HFDataModule, table.DATAMODULE, HF_FIELDS)


@pytest.mark.parametrize("name", ["HFCheckpoint", "HFFlow"])
def test_contract_callbacks_accept_their_routes(name: str) -> None:
    _contract(getattr(hf_lightning.callbacks, name), f"callback:{name}", [*HF_FIELDS, *OWN_FIELDS])


# ------------------------------------------------------------------------------------------------ legacy names
def test_xpu_backend_maps_to_ddp_backend() -> None:
    # Not built here: any ddp_backend makes transformers start a process group while building.
    assert table.LEGACY["xpu_backend"].apply("gloo", {}) == {"ddp_backend": "gloo"}
    with pytest.raises(ValueError, match="ddp_backend"):
        table.LEGACY["xpu_backend"].apply("gloo", {"ddp_backend": "nccl"})


def test_legacy_names_are_really_gone_from_transformers() -> None:
    for name in table.LEGACY:
        if name == "logging_dir":
            assert name not in HF_FIELDS
            continue
        with pytest.raises(TypeError, match=name):
            transformers.TrainingArguments(**{name: 1})
