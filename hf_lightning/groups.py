"""Grouped settings of HFModule and HFDataModule, and the move of the flat keywords of earlier releases into them.

HFModule takes ``optimization`` / ``evaluation`` / ``compilation`` and HFDataModule ``loader``: frozen settings types
(``hf_lightning/settings.py``) whose fields keep their ``TrainingArguments`` (or DataLoader) names. Earlier releases
took those fields flat (``HFModule(learning_rate=...)``, ``model.init_args.learning_rate`` in yaml). `Grouping.regroup`
moves flat keywords (Python calls, checkpoints saved with flat hyper-parameters) and `Grouping.upgrade_config` flat
yaml keys (``hf_lightning/cli.py`` calls it for every config jsonargparse loads) into their group, with a
``FutureWarning`` naming the new key.
"""

from __future__ import annotations

import copy
import inspect
import os
import sys
import warnings
from dataclasses import fields
from typing import Any

from hf_lightning.settings import CompileSettings, EvaluationSettings, LoaderSettings, OptimizerSettings


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside hf_lightning, Lightning and jsonargparse (the user's call), so a
    warning points at the user's line (and is shown once per line of theirs)."""
    skipped = tuple(os.path.dirname(m.__file__) for m in (sys.modules["hf_lightning"], sys.modules.get("lightning"),
                                                          sys.modules.get("jsonargparse")) if m is not None)
    frame, level = sys._getframe(1), 1  # level 1: the function calling warnings.warn
    while frame is not None and frame.f_code.co_filename.startswith(skipped):
        frame, level = frame.f_back, level + 1
    return level


class Grouping:
    """One component's groups.

    Args:
        component: The component's key in a config (``model``, ``data``).
        groups: Keyword -> settings type (``{"optimization": OptimizerSettings, ...}``).
    """

    def __init__(self, component: str, groups: dict[str, type]) -> None:
        self.component = component
        self.groups = groups
        #: each grouped field's group: ``learning_rate`` -> ``optimization``
        self.group_of = {f.name: group for group, cls in groups.items() for f in fields(cls)}

    def new_key(self, name: str) -> str:
        """Where a flat key of earlier releases lives now (``optimization.learning_rate``)."""
        return f"{self.group_of[name]}.{name}"

    def as_group(self, group: str, value: Any) -> Any:
        """One group's settings from what a caller gave: None (the defaults), a dict (a checkpoint's hyper-parameters,
        the HF-style Trainer's translation) or the settings object (copied: the signature's default is shared).

        Raises:
            TypeError: A dict key that is not a field of the group (the message lists the fields).
        """
        cls = self.groups[group]
        if value is None:
            return cls()
        if isinstance(value, cls):
            return copy.deepcopy(value)
        if isinstance(value, dict):
            names = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - names)
            if unknown:
                raise TypeError(f"{group}: unknown key(s) {unknown}; {cls.__name__} has {sorted(names)}.")
            return cls(**value)
        raise TypeError(f"{group} must be a {cls.__name__} or a dict of its fields, got {type(value).__name__}.")

    def regroup(self, given: dict[str, Any], flat: dict[str, Any], owner: str) -> dict[str, Any]:
        """The component's groups as settings objects, with flat keywords of earlier releases moved into them.

        Args:
            given: Keyword -> what the caller gave for each group (see `as_group`).
            flat: Keywords outside the signature: grouped field names (moved, with a ``FutureWarning`` naming the new
                key) or anything else (a ``TypeError``, as Python gives for an unknown keyword).
            owner: The class name, for the messages.

        Raises:
            TypeError: An unknown keyword, or a field given flat and, with another value, in its group.
        """
        unknown = sorted(set(flat) - set(self.group_of))
        if unknown:
            raise TypeError(f"{owner}.__init__() got unexpected keyword argument(s) {unknown}.")
        resolved = {name: self.as_group(name, given.get(name)) for name in self.groups}
        if flat:
            moves = "; ".join(f"{k} is now {self.new_key(k)}" for k in flat)
            warnings.warn(f"{owner}: flat settings are grouped now ({moves}); the flat keywords still work but will be "
                          "removed in a future release.", FutureWarning, stacklevel=_caller_stacklevel())
        for group, settings_type in self.groups.items():
            mine = {k: v for k, v in flat.items() if self.group_of[k] == group}
            value = given.get(group)
            # what the caller set in the group: a dict's keys, or the fields of a settings object off their default
            if isinstance(value, dict):
                chosen = value
            elif isinstance(value, settings_type):
                default = settings_type()
                chosen = {k: v for k, v in value.as_dict().items() if v != getattr(default, k)}
            else:
                chosen = {}
            both = sorted(k for k in set(chosen) & set(mine) if chosen[k] != mine[k])
            if both:
                raise TypeError(f"{owner}: {both} given both flat and in {group}, with different values; give them "
                                f"once, in {group}.")
            if mine:
                resolved[group] = resolved[group].replace(**mine)
        return resolved

    def save_hyperparameters(self, component: Any, groups: dict[str, Any], ignore: list[str],
                             replaced: dict[str, Any] | None = None) -> None:
        """``component.save_hyperparameters()`` from the ``__init__`` calling this: every init argument but ``ignore``
        and the flat keywords of earlier releases, with each group as a plain dict (a readable hparams.yaml, flattened
        by the loggers; `as_group` turns it back when a checkpoint is loaded), and ``replaced`` values recorded
        instead of the arguments of those names."""
        # The component's __init__, where Lightning reads the arguments; given to both calls, so that Lightning does
        # not take a frame itself (a frame it holds in its own locals is a reference cycle that keeps every caller's
        # frame, and what they hold, such as the HF-style Trainer and its model, alive until the garbage collector).
        frame = inspect.currentframe().f_back
        try:
            component.save_hyperparameters(ignore=[*ignore, *(replaced or {}), *self.group_of], frame=frame)
            component.save_hyperparameters({**component.hparams, **(replaced or {}),
                                            **{name: g.as_dict() for name, g in groups.items()}}, frame=frame)
        finally:
            del frame

    def upgrade_config(self, init_args: dict[str, Any]) -> list[str]:
        """Moves flat grouped keys of a yaml ``init_args`` into their groups, in place (old configs keep parsing).

        Returns:
            The moved keys (empty when the config is already grouped).

        Raises:
            ValueError: A key given both flat and in its group.
        """
        moved = [k for k in init_args if k in self.group_of]
        for name in moved:
            group = init_args.setdefault(self.group_of[name], {})
            if not isinstance(group, dict) or name in group:
                raise ValueError(f"{self.component}: {name} is given flat and {self.group_of[name]} is given too; keep "
                                 f"{self.component}.init_args.{self.new_key(name)} only.")
            group[name] = init_args.pop(name)
        return moved


def group_field(group: str, name: str) -> property:
    """A read-only attribute that is one field of a group (``max_grad_norm`` -> ``self.optimization.max_grad_norm``):
    the groups are the only copy of the settings."""
    return property(lambda self: getattr(getattr(self, group), name), doc=f"``{group}.{name}``")


MODEL = Grouping("model", {"optimization": OptimizerSettings, "evaluation": EvaluationSettings,
                           "compilation": CompileSettings})
DATA = Grouping("data", {"loader": LoaderSettings})

__all__ = ["DATA", "MODEL", "Grouping", "group_field"]
