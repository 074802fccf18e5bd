"""Hyper-parameter search: Trainer.hyperparameter_search (optuna) and `python -m hf_lightning hpo`."""

from __future__ import annotations

from pathlib import Path

import optuna  # the `optuna` extra (in dev)

from hf_lightning import Trainer, TrainingArguments
from tests.helpers.tiny import RegressionDataset, RegressionModel

ROOT = Path(__file__).resolve().parents[2]


def test_trainer_hyperparameter_search_finds_the_better_learning_rate(tmp_path):
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=8, num_train_epochs=2, report_to=[],
                             use_cpu=True, save_strategy="no", eval_strategy="epoch", disable_tqdm=True)
    trainer = Trainer(model_init=RegressionModel, args=args, train_dataset=RegressionDataset(),
                      eval_dataset=RegressionDataset(length=16, seed=1))
    seen: list[tuple[float, float]] = []

    def space(trial):
        return {"learning_rate": trial.suggest_categorical("learning_rate", [1e-4, 0.3])}

    def objective(metrics):
        seen.append((trainer.args.learning_rate, metrics["eval_loss"]))
        return metrics["eval_loss"]

    best = trainer.hyperparameter_search(hp_space=space, compute_objective=objective, n_trials=4,
                                         direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0))
    assert best.hyperparameters == {"learning_rate": 0.3}  # lr 1e-4 barely moves a = b = 0 in 16 steps
    assert best.objective == min(loss for _, loss in seen)
    assert trainer.args.learning_rate == args.learning_rate  # restored after the search
    assert trainer.state.is_hyper_param_search and trainer.state.trial_params is not None


def test_hpo_command_line(tmp_path, capsys):
    from hf_lightning.cli import main

    best = main(["hpo", "--config", str(ROOT / "tests/assets/tiny_cli.yaml"), "--n-trials", "2",
                 "--param", "model.init_args.optimization.learning_rate=log:1e-4:1e-2", "--metric", "eval_loss",
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
                 "--trainer.max_steps", "2", "--trainer.val_check_interval", "2"])
    assert 1e-4 <= best.hyperparameters["model.init_args.optimization.learning_rate"] <= 1e-2
    assert "best trial" in capsys.readouterr().out
