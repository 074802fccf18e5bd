"""Hyper-parameter search with optuna: ``Trainer.hyperparameter_search`` and ``python -m hf_lightning hpo``.

Trials report their objective after every evaluation and are pruned by the study's pruner (as transformers'
``_report_to_hp_search``). The default search space and objective are transformers' own
(``default_hp_space_optuna``, ``default_compute_objective``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback, TrainerState
from transformers.trainer_utils import BestRun, HPSearchBackend, default_compute_objective, default_hp_space_optuna
from transformers.utils import logging as hf_logging

from hf_lightning.modules.records import eval_metrics

log = hf_logging.get_logger("transformers.trainer")

if TYPE_CHECKING:
    from hf_lightning.trainer import Trainer


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as err:
        raise ImportError("Hyper-parameter search needs optuna: pip install 'hf_lightning[optuna]'.") from err
    return optuna


class _Reporter(TrainerCallback):
    """Reports the objective of each evaluation to the trial; prunes when the study says so (the callbacks then get
    ``on_train_end`` before ``TrialPruned`` ends the trial, as transformers')."""

    def __init__(self, trial: Any, compute_objective: Callable[[dict[str, float]], float],
                 trainer: Trainer) -> None:
        self.trial = trial
        self.compute_objective = compute_objective
        self.trainer = trainer
        self.objective: float | None = None

    def on_evaluate(self, args: Any, state: TrainerState, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        self.objective = self.compute_objective(dict(metrics or {}))
        if len(self.trial.study.directions) > 1:
            return  # optuna reports (and prunes) single-objective trials only, as transformers' reporting skips them
        self.trial.report(self.objective, state.global_step)
        if self.trial.should_prune():
            self.trainer.callback_handler.on_train_end(args, state, control)
            raise _optuna().TrialPruned(f"pruned at step {state.global_step} (objective {self.objective})")


def hyperparameter_search(
    trainer: Trainer, hp_space: Callable[[Any], dict[str, Any]] | None = None,
    compute_objective: Callable[[dict[str, float]], float] | None = None, n_trials: int = 20,
    direction: str | list[str] = "minimize", backend: str | None = None,
    hp_name: Callable[[Any], str] | None = None, **kwargs: Any,
) -> BestRun | list[BestRun]:
    """transformers' ``Trainer.hyperparameter_search`` on the optuna backend (see `Trainer.hyperparameter_search`)."""
    if backend not in (None, "optuna"):
        raise ValueError(f"backend='{backend}' is not supported: hf_lightning searches with optuna (backend='optuna').")
    if trainer.model_init is None:
        raise RuntimeError("To use hyperparameter search, you need to pass your model through a model_init function.")
    optuna = _optuna()
    hp_space = hp_space or default_hp_space_optuna
    compute_objective = compute_objective or default_compute_objective
    # as transformers: what the search runs with, on the trainer for callbacks and subclasses to read
    trainer.hp_search_backend, trainer.hp_name, trainer.compute_objective = HPSearchBackend.OPTUNA, hp_name, \
        compute_objective
    def objective(trial: Any) -> float:
        params = hp_space(trial)
        for key, value in params.items():  # transformers' _hp_search_setup: onto the arguments, in the field's type
            if not hasattr(trainer.args, key):
                log.warning(f"Trying to set {key} in the hyperparameter search but there is no corresponding field in"
                            " `TrainingArguments`.")
                continue
            old = getattr(trainer.args, key)
            setattr(trainer.args, key, type(old)(value) if old is not None else value)
        # checkpoints in output_dir/<hp_name(trial)> or output_dir/run-<number>; the arguments keep output_dir
        name = hp_name(trial) if hp_name is not None else None
        trainer.trial_output_dir = os.path.join(trainer.args.output_dir, name or f"run-{trial.number}")
        trainer.state = TrainerState(is_hyper_param_search=True, trial_name=name, trial_params=params)
        reporter = _Reporter(trial, compute_objective, trainer)
        trainer.add_callback(reporter)
        try:
            trainer.train(trial=trial)
        finally:
            trainer.remove_callback(reporter)
        if reporter.objective is None:  # no evaluation during training
            return compute_objective(trainer.evaluate())
        return reporter.objective

    # transformers' run_hp_search_optuna: a list of directions is a multi-objective study (one BestRun per Pareto
    # trial); timeout, n_jobs, gc_after_trial and catch go to optimize, the rest to create_study.
    run = {name: kwargs.pop(name) for name in ("timeout", "n_jobs", "gc_after_trial", "catch") if name in kwargs}
    directions = direction if isinstance(direction, list) else None
    study = optuna.create_study(direction=None if directions else direction, directions=directions, **kwargs)
    try:  # as in transformers, the arguments keep the last trial's values
        study.optimize(objective, n_trials=n_trials, **run)
    finally:
        trainer.trial_output_dir = None
        trainer.hp_search_backend = None  # as transformers, after the search
    if len(study.directions) > 1:
        return [BestRun(str(best.number), best.values, best.params) for best in study.best_trials]
    best = study.best_trial
    return BestRun(str(best.number), best.value, best.params)


# --------------------------------------------------------------------------------------------------- CLI
def _suggest(trial: Any, name: str, spec: str) -> Any:
    """``float:LOW:HIGH``, ``log:LOW:HIGH``, ``int:LOW:HIGH`` or ``choice:A,B,C`` -> a trial suggestion."""
    kind, _, rest = spec.partition(":")
    if kind in ("float", "log"):
        low, high = (float(v) for v in rest.split(":"))
        return trial.suggest_float(name, low, high, log=kind == "log")
    if kind == "int":
        low, high = (int(v) for v in rest.split(":"))
        return trial.suggest_int(name, low, high)
    if kind == "choice":
        return trial.suggest_categorical(name, rest.split(","))
    raise ValueError(f"--param {name}={spec}: use float:LOW:HIGH, log:LOW:HIGH, int:LOW:HIGH or choice:A,B,C.")


def main(argv: list[str] | None = None) -> BestRun:
    """``python -m hf_lightning hpo --config X.yaml --param model.optimization.learning_rate=log:1e-5:1e-3 ...``."""
    parser = argparse.ArgumentParser(prog="python -m hf_lightning hpo", description=__doc__)
    parser.add_argument("--config", action="append", required=True, help="fit config(s), as for `fit`")
    parser.add_argument("--param", action="append", required=True, help="DOTTED.FIELD=float|log|int:LOW:HIGH or choice:A,B")
    parser.add_argument("--metric", default="eval_loss", help="evaluation metric to optimise (default eval_loss)")
    parser.add_argument("--direction", default="minimize", choices=["minimize", "maximize"])
    parser.add_argument("--n-trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42, help="seed of optuna's sampler")
    known, overrides = parser.parse_known_args(argv)
    optuna = _optuna()
    from hf_lightning.cli import main as cli_main

    space = dict(p.split("=", 1) for p in known.param)

    def objective(trial: Any) -> float:
        args = ["fit", *[a for c in known.config for a in ("--config", c)], "--export_dir", "none", *overrides]
        for field_name, spec in space.items():
            args += [f"--{field_name}", str(_suggest(trial, field_name, spec))]
        cli = cli_main(args)
        metrics = eval_metrics(cli.model)
        if known.metric not in metrics:
            raise KeyError(f"--metric {known.metric} is not among the evaluation metrics {sorted(metrics)}.")
        return metrics[known.metric]

    study = optuna.create_study(direction=known.direction, sampler=optuna.samplers.TPESampler(seed=known.seed))
    study.optimize(objective, n_trials=known.n_trials)
    best = study.best_trial
    print(f"best trial {best.number}: {known.metric}={best.value} with {best.params}")
    return BestRun(str(best.number), best.value, best.params)
