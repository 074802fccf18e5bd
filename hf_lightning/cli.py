"""``python -m hf_lightning``: LightningCLI over HFModule + HFDataModule, plus the ``report`` command.

Configs are stackable (``--config a.yaml --config b.yaml``), any field can be overridden with a dotted flag
(``--trainer.max_steps 20``, ``--model.optimization.learning_rate 3e-5``, ``--data.batch_size 16``) or an environment
variable (``HFL_FIT__TRAINER__MAX_STEPS=20``; prefix ``HFL``, then the subcommand, fields joined by ``__``).

Configs written before HFModule and HFDataModule grouped their settings (``model.init_args.learning_rate`` where it is
now ``model.init_args.optimization.learning_rate``, ``data.init_args.num_workers`` now ``data.init_args.loader.
num_workers``) keep working: such keys are moved into their group as jsonargparse loads each config file or yaml value
(`load_upgraded`) and in flags (`upgrade_flat_keys`), with a warning naming the new keys.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import signal
import sys
import traceback
import warnings
from types import SimpleNamespace
from typing import Any, Literal

import lightning as L
import torch
import yaml
from jsonargparse import get_loader, set_loader
from lightning.pytorch import seed_everything
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from transformers.trainer_pt_utils import log_metrics, save_metrics

from hf_lightning.data.datamodule import HFDataModule
from hf_lightning.groups import DATA, MODEL, Grouping
from hf_lightning.modules.base import HFModule
from hf_lightning.modules.records import eval_metrics
from hf_lightning.predictions import write_predictions

ENV_PREFIX = "HFL"

DESCRIPTION = "Train, evaluate and predict with transformers models on Lightning (LightningCLI)."
EPILOG = ("Two more commands: 'python -m hf_lightning report OUTPUT_DIR' draws a run's training curves into a PNG and "
          "prints a summary; 'python -m hf_lightning hpo --config CONFIG --param ...' runs a hyper-parameter search "
          "with optuna. Each takes --help.")

TRAINER_DEFAULTS: dict[str, Any] = {
    # TensorBoard event files under runs/<name>/version_<n>/ by default.
    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
               "init_args": {"save_dir": "runs", "name": "hf_lightning"}},
    # HFDataModule shards one seeded permutation across ranks itself (HF order, exact DDP == 1-process batches).
    "use_distributed_sampler": False,
    # transformers.Trainer runs no sanity evaluation; skipping it also keeps the RNG stream identical.
    "num_sanity_val_steps": 0,
}


class KeepConfigFiles(SaveConfigCallback):
    """Lightning's ``SaveConfigCallback`` (the run's merged config as ``config.yaml`` in the log folder, replacing the
    previous run's), except that it never overwrites a config file the run was given: without a logger the log folder
    is ``trainer.default_root_dir`` (the current folder), where the user's own ``config.yaml`` may be."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.already_saved and self.save_to_log_dir and trainer.log_dir is not None:
            target = os.path.realpath(os.path.join(trainer.log_dir, self.config_filename))
            given = [os.path.realpath(str(path)) for path in (self.config.get("config") or [])]
            if target in given:
                raise ValueError(
                    f"The run would save its merged config over {target}, a config file it was given (the log folder "
                    f"is {trainer.log_dir}). Set --trainer.default_root_dir (or a logger's save_dir) to another "
                    "folder, or rename the config file.")
        super().setup(trainer, pl_module, stage)


class HFLightningCLI(LightningCLI):
    """LightningCLI that links data facts into the model and exports the trained model in HF format."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_labels", "model.init_args.num_labels", apply_on="instantiate")
        parser.link_arguments("data.id2label", "model.init_args.id2label", apply_on="instantiate")
        parser.link_arguments("data.problem_type", "model.init_args.problem_type", apply_on="instantiate")
        parser.add_argument(
            "--export_dir", type=str | None, default=None,
            help="Where fit saves the trained model and tokenizer with save_pretrained "
                 "(default: <trainer.log_dir>/hf_model; 'none' to skip).",
        )
        parser.add_argument(
            "--float32_matmul_precision", type=Literal["highest", "high", "medium"] | None, default=None,
            help="torch.set_float32_matmul_precision before anything is built: 'high' runs fp32 matmuls on TF32 "
                 "tensor cores (Ampere and newer GPUs), as transformers' tf32=True.",
        )

    def _own_config(self) -> Any:
        """The parsed config of the running subcommand (where this CLI's own options are)."""
        return self.config[self.subcommand] if self.subcommand else self.config

    def _parse_ckpt_path(self) -> None:
        """Lightning's (the .ckpt's hyper-parameters into the config), after refusing an HF checkpoint folder or one
        of its files, which Lightning would try to read as a .ckpt."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if config is not None:
            self._refuse_hf_checkpoint(config.get("ckpt_path"))
        before = _flat(config.get("model")) if config is not None else {}
        super()._parse_ckpt_path()
        after = _flat(self.config[subcommand].get("model")) if config is not None else {}
        changed = [f"model.{k}: {before[k]!r} -> {after.get(k)!r}" for k in before if before[k] != after.get(k)]
        if changed:
            warnings.warn(f"--ckpt_path {config.get('ckpt_path')}: Lightning takes the model's settings from the "
                          f"checkpoint, over the config and flags given: {'; '.join(changed[:10])}. To train with "
                          "other settings, start from the checkpoint's weights in a new run instead.",
                          UserWarning, stacklevel=2)

    @staticmethod
    def _refuse_hf_checkpoint(ckpt: Any) -> None:
        if ckpt and os.path.isfile(str(ckpt)) and str(ckpt).endswith((".safetensors", ".bin", ".json", ".pth")):
            ckpt = os.path.dirname(str(ckpt))  # a file of an HF checkpoint folder: the folder's message
        if ckpt and os.path.isdir(str(ckpt)):
            raise ValueError(
                f"--ckpt_path {ckpt} is a folder (or a file of one); --ckpt_path takes a Lightning .ckpt file. A "
                "checkpoint-N folder "
                "resumes through HFCheckpoint: --config configs/checkpointing.yaml "
                f"--trainer.callbacks.init_args.resume_from_checkpoint {ckpt} (docs/checkpoints.md); to start "
                f"from its weights only, pass --model.init_args.model {ckpt}.")

    def before_instantiate_classes(self) -> None:
        self._refuse_hf_checkpoint(self._own_config().get("ckpt_path"))
        precision = self._own_config().get("float32_matmul_precision")
        if precision:
            torch.set_float32_matmul_precision(precision)
        trainer = self._own_config().get("trainer") or {}
        callbacks = trainer.get("callbacks") or []
        named = [getattr(c, "class_path", None) or (c.get("class_path") if isinstance(c, dict) else None)
                 for c in (callbacks if isinstance(callbacks, list) else [callbacks])]
        if trainer.get("enable_checkpointing") is False and any(str(n).endswith("HFCheckpoint") for n in named):
            raise ValueError(
                "--trainer.enable_checkpointing false turns Lightning's checkpointing off, and HFCheckpoint (in "
                "trainer.callbacks) is that checkpointing: Lightning would refuse it as a ModelCheckpoint. Remove "
                "HFCheckpoint from trainer.callbacks to train without checkpoints, or leave enable_checkpointing at "
                "true (HFCheckpoint then takes the place of Lightning's ModelCheckpoint).")

    def instantiate_classes(self) -> None:
        """Lightning's, with a setting that hf_lightning refuses reported by its own message: jsonargparse wraps it in
        an error per type it tried ("Does not validate against any of the Union subtypes" and the whole config).
        Then the seed again, as ``transformers.Trainer(...)`` sets it once the model is built: training's random
        draws (dropout) start from the seed, not from where building the model (a new head) left the generator, so a
        run has the numbers of the transformers script with the same seed."""
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:
            own = _own_error(err)
            if own is None:
                raise
            raise own from None
        seed = self._own_config().get("seed_everything")
        if isinstance(seed, int) and not isinstance(seed, bool):
            seed_everything(seed, workers=True, verbose=False)

    def export_path(self) -> str | None:
        """The folder the trained model is exported to after ``fit``."""
        chosen = self._own_config().get("export_dir")
        if chosen is not None and str(chosen).lower() == "none":
            return None
        return chosen or os.path.join(self.trainer.log_dir or self.trainer.default_root_dir, "hf_model")

    def results_dir(self) -> str:
        """Where the HF-style result files go: the run's log folder (``runs/<name>/version_<n>`` by default).

        Every rank must call it: ``trainer.log_dir`` broadcasts rank zero's folder.
        """
        return self.trainer.log_dir or self.trainer.default_root_dir

    def save_results(self, folder: str, split: str, metrics: dict[str, Any], show: bool = False) -> None:
        """Writes ``<split>_results.json`` and merges it into ``all_results.json`` with transformers' own
        ``save_metrics`` (world process zero only); with ``show`` also prints them as ``log_metrics`` does
        (``***** eval metrics *****``), as HF's example scripts do at the end of training."""
        if not metrics:
            return
        if self.trainer.is_global_zero:
            os.makedirs(folder, exist_ok=True)
        writer = SimpleNamespace(is_world_process_zero=lambda: self.trainer.is_global_zero,
                                 args=SimpleNamespace(output_dir=folder))
        save_metrics(writer, split, metrics)
        if show:
            log_metrics(writer, split, metrics)

    def after_fit(self) -> None:
        from hf_lightning.callbacks.hf_flow import find_flow

        flow = find_flow(self.trainer)
        folder = self.results_dir()
        if flow is not None:
            self.save_results(folder, "train", dict(getattr(flow, "train_metrics", {})), show=True)
            self.save_results(folder, "eval", self._exported_model_eval(flow), show=True)
            if self.trainer.is_global_zero:
                os.makedirs(folder, exist_ok=True)
                flow.state.save_to_json(os.path.join(folder, "trainer_state.json"))
        path = self.export_path()
        if path is None:
            return
        self._export(os.path.normpath(path))
        if self.trainer.is_global_zero:
            print(f"Saved the trained model in HF format to {path}")

    def _export(self, path: str) -> None:
        """The trained model written into a hidden staging folder beside ``path``, then renamed into place: a crash
        or a full disk never leaves a partial model folder, and a model already at ``path`` stays until the new one
        is complete."""
        from hf_lightning.checkpoint import folder

        staging = folder.staging_dir(path)
        if self.trainer.is_global_zero:
            folder.start_staging(path)
        try:
            self.model.save_pretrained(staging)  # every rank: sharded weights are gathered, rank zero writes
        except OSError as err:
            if self.trainer.is_global_zero:
                shutil.rmtree(staging, ignore_errors=True)
            kept = "the model already there is kept" if os.path.isdir(path) else "nothing was left there"
            raise OSError(err.errno, f"Could not export the trained model to {path} ({err}); {kept}. Free space or "
                                     "fix the folder (--export_dir), then export again from the newest checkpoint.") from err
        if self.trainer.is_global_zero:
            folder.publish(staging, path)

    def _exported_model_eval(self, flow: Any) -> dict[str, Any]:
        """The evaluation of the model ``fit`` ends with: the last one, or, where ``load_best_model_at_end`` loaded
        the best checkpoint's weights, that checkpoint's (as transformers' example scripts report the best model's
        ``evaluate()`` after ``train()``; evaluation is deterministic, so its record holds the same numbers)."""
        from hf_lightning.callbacks.hf_flow import find_saver

        state = flow.state
        settings = getattr(find_saver(self.trainer), "settings", None)
        if not getattr(settings, "load_best_model_at_end", False) or state.best_model_checkpoint is None:
            return dict(flow.last_eval_metrics)
        best: dict[str, Any] = {}
        for record in state.log_history:
            if record.get("step") == state.best_global_step and any(k.startswith("eval_") for k in record):
                best.update({k: v for k, v in record.items() if k != "step"})
        return best or dict(flow.last_eval_metrics)

    def after_validate(self) -> None:
        self.save_results(self.results_dir(), "eval", eval_metrics(self.model))

    def after_test(self) -> None:
        self.save_results(self.results_dir(), "test", eval_metrics(self.model))

    def after_predict(self) -> None:
        """``predict_results.json`` (the metrics, where the data has labels), ``predictions.npz`` and the task's text
        file (`hf_lightning.predictions`) in the run's folder."""
        output = getattr(self.model, "prediction_output", None)
        if output is None:
            return
        folder = self.results_dir()
        self.save_results(folder, "predict", dict(output.metrics))
        if self.trainer.is_global_zero:
            for path in write_predictions(folder, self.model, output):
                print(f"Saved predictions to {path}")


_SUBCOMMANDS = ("fit", "validate", "test", "predict")
_FLAT_FLAG = re.compile(r"--(model|data)\.(?:init_args\.)?(\w+)(=.*)?$")
_YAML_LOAD = get_loader("yaml")
#: jsonargparse's yaml loading, plus the move of flat keys into their groups (`load_upgraded`).
PARSER_MODE = "hf_lightning_yaml"
_GROUPINGS = {"model": (MODEL, HFModule), "data": (DATA, HFDataModule)}


def _own_error(err: BaseException) -> BaseException | None:
    """The first error down ``err``'s chain (its causes, and contexts not suppressed) that hf_lightning's own code
    raised: a setting it refuses, with its message."""
    package = os.path.dirname(__file__) + os.sep
    seen: BaseException | None = err
    while seen is not None:
        frames = traceback.extract_tb(seen.__traceback__)
        if frames and frames[-1].filename.startswith(package) and isinstance(seen, (ValueError, TypeError)):
            return seen
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return None


def _warn_moved(moved: list[tuple[Grouping, str]]) -> None:
    warnings.warn("HFModule / HFDataModule group these settings now: " + "; ".join(
        f"{g.component}.init_args.{k} -> {g.component}.init_args.{g.new_key(k)}" for g, k in dict.fromkeys(moved))
        + ". The flat keys still work but will be removed in a future release: update the config.",
        FutureWarning, stacklevel=3)


def _is_subclass_path(class_path: Any, base: type) -> bool:
    """Whether a ``class_path`` names ``base`` or a subclass (a short name is looked up among its loaded subclasses)."""
    if not isinstance(class_path, str):
        return False
    module_name, _, name = class_path.rpartition(".")
    if not module_name:
        pending, seen = [base], []
        while pending:
            cls = pending.pop()
            seen.append(cls)
            pending += cls.__subclasses__()
        return any(cls.__name__ == name for cls in seen)
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(found, type) and issubclass(found, base)


def _init_args(spec: Any) -> dict[str, Any] | None:
    """The init arguments of a ``model:`` / ``data:`` value: its ``init_args``, or the mapping itself when it names no
    class."""
    if not isinstance(spec, dict):
        return None
    if isinstance(spec.get("init_args"), dict):
        return spec["init_args"]
    return None if "class_path" in spec else spec


def upgrade_loaded(value: Any) -> list[tuple[Grouping, str]]:
    """Moves flat HFModule / HFDataModule keys of earlier releases into their groups, in place, in one loaded yaml
    value: a whole config (``model:`` / ``data:`` at the top or under a subcommand) or one class spec (a
    ``class_path`` of an HFModule or HFDataModule class).

    Returns:
        The moved keys, with their grouping.
    """
    if not isinstance(value, dict):
        return []
    moved: list[tuple[Grouping, str]] = []
    for grouping, base in _GROUPINGS.values():
        if _is_subclass_path(value.get("class_path"), base) and isinstance(value.get("init_args"), dict):
            moved += [(grouping, k) for k in grouping.upgrade_config(value["init_args"])]
    for scope in [value] + [value[c] for c in _SUBCOMMANDS if isinstance(value.get(c), dict)]:
        for key, (grouping, _) in _GROUPINGS.items():
            init_args = _init_args(scope.get(key))
            if init_args is not None:
                moved += [(grouping, k) for k in grouping.upgrade_config(init_args)]
    return moved


def load_upgraded(text: str) -> Any:
    """The loader of `PARSER_MODE`: jsonargparse's yaml loader, then `upgrade_loaded` (config files, nested files and
    yaml strings alike, each where jsonargparse reads it, so relative paths keep their folder)."""
    value = _YAML_LOAD(text)
    moved = upgrade_loaded(value)
    if moved:
        _warn_moved(moved)
    return value


set_loader(PARSER_MODE, load_upgraded, exceptions=(yaml.YAMLError,))


def upgrade_flat_keys(words: list[str]) -> list[str]:
    """The command line with flat flags of earlier releases moved into their groups: ``--model.learning_rate 3e-5`` /
    ``--model.init_args.learning_rate=3e-5`` become ``--model.init_args.optimization.learning_rate``,
    ``--data.num_workers 2`` becomes ``--data.init_args.loader.num_workers`` (files and yaml values are upgraded by
    `load_upgraded`)."""
    out, moved = [], []
    for word in words:
        flag = _FLAT_FLAG.match(word)
        grouping = _GROUPINGS[flag.group(1)][0] if flag else None
        if grouping is not None and flag.group(2) in grouping.group_of:
            name = flag.group(2)
            out.append(f"--{grouping.component}.init_args.{grouping.new_key(name)}{flag.group(3) or ''}")
            moved.append((grouping, name))
        else:
            out.append(word)
    if moved:
        _warn_moved(moved)
    return out


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config (jsonargparse ``Namespace`` / dict) as ``{"a.b": leaf}``."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if not isinstance(value, dict):
        return {prefix[:-1]: value} if prefix else {}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flat(item, f"{prefix}{key}."))
    return flat


def main(argv: list[str] | None = None) -> Any:
    """Entry point of ``python -m hf_lightning`` and ``hf-lightning``."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] == "report":
        from hf_lightning.report import main as report_main

        return report_main(words[1:])
    if words and words[0] == "hpo":
        from hf_lightning.hpo import main as hpo_main

        return hpo_main(words[1:])
    upgraded = upgrade_flat_keys(words)
    if argv is None and upgraded != words:
        sys.argv[1:] = upgraded  # LightningCLI reads sys.argv itself (given both, it warns)
    try:
        return _cli(upgraded if argv is not None else None)
    except SIGTERMException:  # Lightning ends the fit with a bare SystemExit (status 0): a terminated run is no success
        print("SIGTERM: training stopped without a checkpoint (HFCheckpoint(enable_jit_checkpoint=True) writes one "
              "first); exiting with status 143.", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None


def _cli(args: list[str] | None) -> HFLightningCLI:
    return HFLightningCLI(
        HFModule,
        HFDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,
        parser_kwargs={"default_env": True, "env_prefix": ENV_PREFIX, "parser_mode": PARSER_MODE,
                       "prog": "python -m hf_lightning", "description": DESCRIPTION, "epilog": EPILOG},
        save_config_callback=KeepConfigFiles,
        save_config_kwargs={"overwrite": True},
        args=args,
    )
