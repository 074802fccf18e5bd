"""``TrainingArguments`` with transformers' field names, the legacy names people still copy, and ``translate()``.

``TrainingArguments`` subclasses the installed ``transformers.TrainingArguments``: every field, default and
validation error is transformers' own. On top of it:

* older names (``evaluation_strategy``, ``warmup_ratio``, ``no_cuda``...) are accepted with a ``FutureWarning`` that
  names the replacement, or rejected when their value would change results (table: ``_args_legacy.LEGACY``);
* ``translate(args)`` says where every field goes (table: ``_args_table.ROUTES``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import warnings
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

import transformers
from transformers.training_args import TrainingArguments as HFTrainingArguments
from transformers.training_args_seq2seq import Seq2SeqTrainingArguments as HFSeq2SeqTrainingArguments
from typing_extensions import Self

from hf_lightning._args_legacy import LEGACY
from hf_lightning._args_table import (
    CHECKPOINT,
    DATAMODULE,
    EXTRA_ROUTES,
    FACADE,
    LOGGING,
    MODULE,
    ROUTES,
    SEQ2SEQ_ROUTES,
    STRATEGY,
    TRAINER,
    UNSUPPORTED,
    Route,
    _plain,
    routes_for,
)
from hf_lightning.settings import (
    BestMetric,
    CheckpointSettings,
    CompileSettings,
    FlowSettings,
    refused_optimizer,
    warn_if_error_metric_maximised,
)
from hf_lightning.shared_state import accelerate_state_kept, one_process_view

__all__ = [
    "Route",
    "Seq2SeqTrainingArguments",
    "TrainingArguments",
    "TranslatedArgs",
    "callback_arguments",
    "ensure_args",
    "legacy_table_markdown",
    "migration_table_markdown",
    "translate",
]

_ArgsT = TypeVar("_ArgsT", bound="TrainingArguments")


def _resolve_legacy(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Replace legacy keyword arguments by the fields that took over, warning for each (table order)."""
    legacy = {name: kwargs.pop(name) for name in list(kwargs) if name in LEGACY}
    given = dict(kwargs)
    for name, entry in LEGACY.items():
        value = legacy.get(name)
        if value is None:  # None was every legacy name's "not set"
            continue
        if entry.apply is None and not entry.accepts(value):
            raise ValueError(f"`{name}={value!r}` cannot be honoured ({entry.refuse}).")
        try:
            updates = entry.apply(value, given) if entry.apply is not None else {}
        except ValueError as err:
            raise ValueError(f"legacy argument `{name}`: {err}") from None
        effect = ", ".join(f"{k}={v!r}" for k, v in updates.items()) if updates else "nothing (it has no effect)"
        warnings.warn(
            f"`{name}` was removed in transformers 5.x; {entry.use}. It was passed on as {effect}.",
            FutureWarning,
            stacklevel=3,
        )
        given.update(updates)
    return given


def _accepts_legacy_names(cls: type[_ArgsT]) -> type[_ArgsT]:
    """Wrap the dataclass ``__init__`` so that legacy keyword arguments are mapped before it runs."""
    generated = cls.__init__

    @functools.wraps(generated)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        generated(self, *args, **_resolve_legacy(kwargs))

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


@_accepts_legacy_names
@dataclass
class TrainingArguments(HFTrainingArguments):
    """``transformers.TrainingArguments`` for the Lightning engine: same fields, defaults and validation.

    Every field has one entry in the translation table that names the component consuming it (see ``translate`` and
    ``docs/migration.md``); a field that cannot be honoured makes ``translate`` raise, naming the alternative. Legacy
    names removed in transformers 5.x are accepted with a ``FutureWarning`` (see ``_args_legacy.LEGACY``).

    Args:
        logging_dir: TensorBoard log directory (transformers 5.x dropped this field for the
            ``TENSORBOARD_LOGGING_DIR`` environment variable, which is still read when this is None).
        torch_compile_scope: With ``torch_compile``: ``model`` (the whole model, as transformers) or ``blocks``
            (regional compilation of the repeated blocks; hf_lightning's own field, see docs/fast.md).
        **kwargs: Every ``transformers.TrainingArguments`` field.
    """

    logging_dir: str | None = field(
        default=None,
        metadata={"help": "TensorBoard log directory; defaults to $TENSORBOARD_LOGGING_DIR, else output_dir/runs/..."},
    )
    torch_compile_scope: str = field(
        default="model",
        metadata={"help": "With torch_compile: 'model' compiles the whole model (transformers' way); 'blocks' compiles "
                          "each repeated encoder / decoder block once (regional compilation: compile time does not "
                          "grow with depth)."},
    )

    #: transformers' repr is its str, which hides the tokens (a generated dataclass repr would print hub_token)
    __repr__ = HFTrainingArguments.__str__

    def to_dict(self) -> dict[str, Any]:
        """transformers' ``to_dict`` (what trackers record as the run's config, ``training_args.json``, the
        TensorBoard ``args`` text); hf_lightning's own fields (``logging_dir``, ``torch_compile_scope``) only where
        they are set away from their defaults, so a default run records exactly transformers' dict."""
        values = super().to_dict()
        for own in _OWN_FIELDS:
            if values.get(own.name, own.default) == own.default:
                values.pop(own.name, None)
        return values

    def __post_init__(self) -> None:
        warn_if_error_metric_maximised(self.metric_for_best_model, self.greater_is_better)
        with one_process_view(), accelerate_state_kept():
            super().__post_init__()
        if self.logging_dir is not None:
            self.logging_dir = os.path.expanduser(self.logging_dir)

    @classmethod
    def from_hf(cls, args: HFTrainingArguments) -> Self:
        """Copy every field of a ``transformers.TrainingArguments`` into this class (validated again).

        Args:
            args: The transformers arguments (or a subclass with no fields beyond this class's).

        Returns:
            A new instance of ``cls`` with the same field values.

        Raises:
            TypeError: ``args`` is not a ``transformers.TrainingArguments``.
            ValueError: ``args`` has fields this class does not know.
        """
        if not isinstance(args, HFTrainingArguments):
            raise TypeError(f"from_hf expects a transformers.TrainingArguments, got {type(args).__name__}.")
        known = {f.name for f in fields(cls) if f.init}
        values = {f.name: getattr(args, f.name) for f in fields(args) if f.init}
        unknown = sorted(set(values) - known)
        if unknown:
            hint = ("use hf_lightning.Seq2SeqTrainingArguments.from_hf" if
                    isinstance(args, HFSeq2SeqTrainingArguments) else
                    f"subclass hf_lightning.{cls.__name__} with these fields")
            raise ValueError(f"{type(args).__name__} has fields {unknown} that {cls.__name__} does not know; {hint}.")
        return cls(**copy.deepcopy(values))


#: the fields hf_lightning adds to transformers' (set in the class body above)
_OWN_FIELDS = tuple(f for f in fields(TrainingArguments) if f.name not in {g.name for g in fields(HFTrainingArguments)})


@_accepts_legacy_names
@dataclass
class Seq2SeqTrainingArguments(TrainingArguments, HFSeq2SeqTrainingArguments):
    """``transformers.Seq2SeqTrainingArguments`` for the Lightning engine.

    Adds ``sortish_sampler``, ``predict_with_generate``, ``generation_max_length``, ``generation_num_beams`` and
    ``generation_config`` (transformers' own fields, defaults and ``to_dict``) to ``TrainingArguments``.
    """

    __repr__ = HFTrainingArguments.__str__  # tokens hidden (transformers' Seq2Seq class prints hub_token)


def ensure_args(
    obj: TrainingArguments | HFTrainingArguments | None, output_dir: str = "tmp_trainer"
) -> TrainingArguments:
    """Normalise what a caller passed as ``args``.

    Args:
        obj: None (defaults), an hf_lightning ``TrainingArguments`` (returned as is) or a
            ``transformers.TrainingArguments`` / ``Seq2SeqTrainingArguments`` (copied with ``from_hf``).
        output_dir: Output directory used when ``obj`` is None; ``tmp_trainer`` as ``transformers.Trainer(args=None)``.

    Returns:
        An hf_lightning ``TrainingArguments`` (``Seq2SeqTrainingArguments`` for seq2seq input).

    Raises:
        TypeError: ``obj`` is of another type.
    """
    if obj is None:
        return TrainingArguments(output_dir=output_dir)
    if isinstance(obj, TrainingArguments):
        return obj
    if isinstance(obj, HFSeq2SeqTrainingArguments):
        return Seq2SeqTrainingArguments.from_hf(obj)
    if isinstance(obj, HFTrainingArguments):
        return TrainingArguments.from_hf(obj)
    raise TypeError(
        f"args must be None, hf_lightning.TrainingArguments or transformers.TrainingArguments, got "
        f"{type(obj).__name__}; build one with hf_lightning.TrainingArguments(**values)."
    )


def callback_arguments(
    flow: FlowSettings, checkpoint: CheckpointSettings, base: transformers.TrainingArguments | None = None,
    overrides: dict[str, Any] | None = None,
) -> transformers.TrainingArguments:
    """The ``TrainingArguments`` that transformers' ``TrainerCallback``s see, and checkpoints carry, in one fit.

    ``DefaultFlowCallback`` decides when to log, evaluate and save from these fields, ``EarlyStoppingCallback`` checks
    them, and ``training_args.bin`` holds them: the same object for all, read-only, built here once per fit (never
    inside a module, and no component changes it afterwards).

    Args:
        flow: `HFFlow`'s settings.
        checkpoint: `HFCheckpoint`'s settings.
        base: The arguments the user gave (the HF-style Trainer's, or ``wrap_trainer_callbacks(args=...)``): returned
            as they are, or copied with ``overrides`` applied.
        overrides: With ``base``: the settings a component was given explicitly (``HFCheckpoint(save_steps=...)``).

    Returns:
        ``base`` when nothing overrides it, else new arguments (validated by transformers, so combinations it refuses,
        such as ``load_best_model_at_end`` with save steps that are not a multiple of the eval steps, fail here,
        before training).

    Raises:
        ValueError: transformers refuses the combination; the message names the settings.
    """
    if base is not None:
        changes = {k: v for k, v in (overrides or {}).items() if getattr(base, k) != v}
        if not changes:
            return base
        if "metric_for_best_model" in changes and "greater_is_better" not in (overrides or {}):
            changes["greater_is_better"] = None  # TrainingArguments derives it from the metric's name
        try:
            return dataclasses.replace(base, **changes)
        except ValueError as err:
            raise ValueError(f"HFCheckpoint settings {changes} do not fit the TrainingArguments: {err}") from err
    values = {**flow.as_dict(), **checkpoint.as_dict()}
    best = BestMetric.resolve(flow, checkpoint)
    values.update(metric_for_best_model=flow.metric_for_best_model or checkpoint.metric_for_best_model,
                  greater_is_better=best.greater_is_better if best.name is not None else None)
    values["report_to"] = values["report_to"] or []
    try:
        return TrainingArguments(**values)
    except ValueError as err:
        defaults = {**FlowSettings().as_dict(), **CheckpointSettings().as_dict(), "report_to": []}
        given = {k: v for k, v in values.items() if v != defaults.get(k)}
        raise ValueError(f"The HFFlow / HFCheckpoint settings {given} do not fit together: {err}") from err


@dataclass
class TranslatedArgs:
    """Every routed field of a ``TrainingArguments``, converted, as the settings of the component that consumes it.

    Attributes:
        module: Keyword arguments of ``hf_lightning.HFModule``.
        datamodule: Keyword arguments of ``hf_lightning.HFDataModule``.
        trainer: Keyword arguments of ``lightning.Trainer``.
        flow: `HFFlow`'s settings (logging, evaluation schedule, best metric).
        checkpoint: `HFCheckpoint`'s settings (saving, rotation, best model, resume).
        extra: Fields a user subclass added; no component reads them.

    Fields routed to ``strategy`` are read from the arguments by ``hf_lightning.strategies.trainer_kwargs``, and those
    routed to ``facade`` by the HF-style ``Trainer`` itself (both own the ``TrainingArguments`` they are given);
    ``translate`` checks them and the table documents them.
    """

    module: dict[str, Any] = field(default_factory=dict)
    datamodule: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    flow: FlowSettings = field(default_factory=FlowSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    extra: dict[str, Any] = field(default_factory=dict)


def _is_default(args: TrainingArguments, name: str, value: Any) -> bool:
    """Whether a field holds its declared default (an empty list counts for transformers' ``debug=""``).

    Read from the dataclass declaration: building default arguments would reset accelerate's global state.
    """
    declared = next(f for f in fields(args) if f.name == name)
    default = declared.default_factory() if declared.default_factory is not MISSING else declared.default
    if isinstance(value, (list, str)) and isinstance(default, (list, str)) and not value and not default:
        return True
    return value == default


def _put(sections: dict[str, dict[str, Any]], route: Route, field_name: str, value: Any,
         writers: dict[tuple[str, str], str]) -> None:
    """Write one converted value (``group.field``: into the group); two fields writing one destination must agree."""
    section, key = sections.setdefault(route.target, {}), route.name or field_name
    *groups, leaf = key.split(".")
    for group in groups:
        section = section.setdefault(group, {})
    first = writers.setdefault((route.target, key), field_name)
    if first != field_name and section[leaf] != value:
        raise ValueError(
            f"`{first}` and `{field_name}` disagree ({section[leaf]!r} vs {value!r}) but both set {route.target} "
            f"`{key}`; give them the same value (set `{first}`, transformers mirrors the other when building)."
        )
    section[leaf] = value


def translate(args: TrainingArguments | transformers.TrainingArguments) -> TranslatedArgs:
    """Route every field of ``args`` to the component that consumes it, converting on the way.

    Args:
        args: hf_lightning or transformers training arguments (the latter are copied with ``from_hf``).

    Returns:
        The routed values; see ``docs/migration.md`` for the full table.

    Raises:
        ValueError: Fields that cannot be honoured are set to non-default values (all of them are listed, each with
            its alternative), or two fields that feed the same destination disagree.
    """
    args = ensure_args(args)
    sections: dict[str, dict[str, Any]] = {}
    writers: dict[tuple[str, str], str] = {}
    problems, extra = [], {}
    for f in fields(args):
        if not f.init:
            continue
        value, routes = getattr(args, f.name), routes_for(f.name)
        if routes is None:
            extra[f.name] = value
            continue
        for route in routes:
            if route.target == UNSUPPORTED:
                if not _is_default(args, f.name, value):
                    problems.append(f"- {f.name}={_plain(value, args)!r}: {route.note}")
                continue
            _put(sections, route, f.name, route.convert(value, args), writers)
    refused = refused_optimizer(_plain(args.optim, args))
    if refused is not None:
        problems.append(f"- optim={_plain(args.optim, args)!r}: {refused}")
    if problems:
        raise ValueError("These TrainingArguments cannot be honoured by hf_lightning; leave them at their defaults:\n"
                         + "\n".join(problems))
    CompileSettings(**sections.get(MODULE, {}).get("compilation", {}))  # an unknown backend fails here, as at Trainer()
    return TranslatedArgs(
        module=sections.get(MODULE, {}), datamodule=sections.get(DATAMODULE, {}), trainer=sections.get(TRAINER, {}),
        flow=FlowSettings(**sections.get(LOGGING, {})), checkpoint=CheckpointSettings(**sections.get(CHECKPOINT, {})),
        extra=extra,
    )


_WHERE = {MODULE: "`HFModule`", DATAMODULE: "`HFDataModule`", TRAINER: "`lightning.Trainer`",
          STRATEGY: "`strategies`", FACADE: "`Trainer` facade", UNSUPPORTED: "**unsupported**"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").strip()


def _as(route: Route, field_name: str) -> str:
    if route.target == UNSUPPORTED:
        return "raises unless left at the default"
    text = f"`{route.name or field_name}`"
    if route.convert is not _plain:
        text += ": " + (route.convert.__doc__ or "").strip().splitlines()[0].strip()
    return _cell(text)


def migration_table_markdown() -> str:
    """The field table of ``docs/migration.md``: ``| field | goes to | as | note |``, one row per route.

    Returns:
        Markdown text ending with a newline.
    """
    rows = ["| field | goes to | as | note |", "|---|---|---|---|"]
    for table, tag in ((ROUTES, ""), (SEQ2SEQ_ROUTES, " (seq2seq)"), (EXTRA_ROUTES, " (hf_lightning)")):
        for name in table:
            for route in routes_for(name) or ():
                where = _WHERE.get(route.target) or f"`{route.target.split(':', 1)[1]}` callback"
                rows.append(f"| `{name}`{tag} | {where} | {_as(route, name)} | {_cell(route.note)} |")
    return "\n".join(rows) + "\n"


def legacy_table_markdown() -> str:
    """The legacy-name table of ``docs/migration.md``: ``| legacy name | instead | raises for |``.

    Returns:
        Markdown text ending with a newline.
    """
    rows = ["| legacy name | instead | raises for |", "|---|---|---|"]
    for name, entry in LEGACY.items():
        rows.append(f"| `{name}` | {_cell(entry.use)} | {_cell(entry.refuse) or '-'} |")
    return "\n".join(rows) + "\n"
