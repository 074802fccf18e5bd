"""The Trainer's public methods and attributes beside transformers.Trainer: before train(), between trainings, and
what third-party callbacks read (``accelerator``, ``model_wrapped``)."""

from __future__ import annotations

import pytest
import torch
import transformers

import hf_lightning
from tests.helpers.tiny import RegressionDataset, RegressionModel
from tests.parity.harness import max_rel_diff

ARGS = dict(per_device_train_batch_size=8, num_train_epochs=2, learning_rate=0.1, weight_decay=0.01, report_to=[],
            use_cpu=True, save_strategy="no", disable_tqdm=True, logging_steps=1)


def _trainer(lib, tmp_path, **kwargs):
    args = lib.TrainingArguments(str(tmp_path / lib.__name__), **{**ARGS, **kwargs.pop("args", {})})
    transformers.set_seed(42)
    kwargs.setdefault("model", None if "model_init" in kwargs else RegressionModel())
    return lib.Trainer(args=args, train_dataset=RegressionDataset(), eval_dataset=RegressionDataset(16, seed=1),
                       **kwargs)


def _groups(optimizer):
    return [{k: v for k, v in g.items() if k != "params"} | {"sizes": [p.numel() for p in g["params"]]}
            for g in optimizer.param_groups]


def test_methods_work_before_train(tmp_path):
    """create_optimizer / create_scheduler / the data loaders / the parameter helpers, called up front."""
    seen = {}
    for lib in (transformers, hf_lightning):
        trainer = _trainer(lib, tmp_path)
        trainer.create_optimizer_and_scheduler(num_training_steps=10)
        optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
        train, evaluation = trainer.get_train_dataloader(), trainer.get_eval_dataloader()
        seen[lib.__name__] = {
            "optimizer": type(optimizer).__name__, "groups": _groups(optimizer),
            "scheduler": [type(scheduler).__name__, scheduler.lr_lambdas[0](3)],
            "train_batches": len(train), "eval_batches": len(evaluation), "eval_batch": sorted(next(iter(evaluation))),
            "lrs": trainer.get_learning_rates(), "trainable": trainer.get_num_trainable_parameters(),
            "group_of_a": sorted(trainer.get_optimizer_group(trainer.model.a)),
            "all_groups": [len(g) for g in trainer.get_optimizer_group()],
        }
        # what create_optimizer built is what train() uses (transformers keeps self.optimizer, wrapped by accelerate)
        trainer.train()
        assert getattr(trainer.optimizer, "optimizer", trainer.optimizer) is optimizer
    assert seen["hf_lightning"] == seen["transformers"]


def test_a_second_train_with_model_init_trains_a_fresh_model(tmp_path):
    """With model_init, every train() builds a new model, optimizer and scheduler (hyper-parameter trials rely on
    it): the second run ends where a first run with the same seed does, in both libraries."""
    weights = {}
    for lib in (transformers, hf_lightning):
        trainer = _trainer(lib, tmp_path, model_init=RegressionModel)
        trainer.train()
        first = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.train()
        second = trainer.model.state_dict()
        assert max_rel_diff(second, first) < 1e-7, lib.__name__
        assert float(second["a"]) != 0.0  # trained, not left at its initial zero
        weights[lib.__name__] = second
    assert max_rel_diff(weights["hf_lightning"], weights["transformers"]) < 1e-6


def test_a_second_train_without_model_init_continues_with_the_same_optimizer(tmp_path):
    """Without model_init, transformers keeps its optimizer (and its state) and rebuilds its own scheduler."""
    weights = {}
    for lib in (transformers, hf_lightning):
        trainer = _trainer(lib, tmp_path)
        trainer.train()
        optimizer = trainer.optimizer
        trainer.train()
        assert getattr(trainer.optimizer, "optimizer", trainer.optimizer) is \
            getattr(optimizer, "optimizer", optimizer)
        weights[lib.__name__] = trainer.model.state_dict()
    assert max_rel_diff(weights["hf_lightning"], weights["transformers"]) < 1e-6


def test_hyperparameter_search_trains_every_trial(tmp_path):
    """Each trial's objective equals a fresh run with that trial's learning rate: no trial reuses another's optimizer
    or is left at its initial weights."""
    trainer = _trainer(hf_lightning, tmp_path, model_init=RegressionModel, args={"eval_strategy": "epoch"})
    finals = {}  # learning rate -> eval_loss of the trial's last evaluation

    def space(trial):
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 0.3, log=True)}

    def objective(metrics):
        finals[trainer.args.learning_rate] = metrics["eval_loss"]
        return metrics["eval_loss"]

    trainer.hyperparameter_search(hp_space=space, compute_objective=objective, n_trials=3, direction="minimize")
    assert len(finals) == 3
    for i, (lr, loss) in enumerate(finals.items()):
        fresh = _trainer(hf_lightning, tmp_path / f"fresh{i}", model_init=RegressionModel,
                         args={"eval_strategy": "epoch", "learning_rate": lr})
        fresh.train()
        assert loss == pytest.approx(fresh.state.log_history[-2]["eval_loss"], rel=1e-6), f"trial {i} (lr {lr})"


def test_accelerator_and_model_wrapped_answer_what_callbacks_ask(tmp_path):
    answers = {}
    for lib in (transformers, hf_lightning):
        trainer = _trainer(lib, tmp_path)
        trainer.train()
        acc = trainer.accelerator
        t = torch.arange(6.0).reshape(3, 2)
        acc.wait_for_everyone()
        answers[lib.__name__] = {
            "num_processes": acc.num_processes, "process_index": acc.process_index,
            "local_process_index": acc.local_process_index, "is_main_process": acc.is_main_process,
            "is_local_main_process": acc.is_local_main_process, "use_distributed": acc.use_distributed,
            "device": acc.device.type, "gather": acc.gather(t).tolist(), "gather_for_metrics": acc.gather_for_metrics(t).tolist(),
            "reduce": acc.reduce(t).tolist(), "unwrap": acc.unwrap_model(trainer.model) is trainer.model,
            "model_wrapped": trainer.model_wrapped is trainer.model,
        }
    assert answers["hf_lightning"] == answers["transformers"]


@pytest.mark.parametrize("bad, error", [
    (dict(args={"save_strategy": "best"}), ValueError),
    (dict(args={"eval_strategy": "steps"}, eval_dataset=None), ValueError),
    (dict(model_init=RegressionModel, optimizers=(None, torch.optim.lr_scheduler.LambdaLR(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), lambda step: 1.0))), RuntimeError),
], ids=["best-without-metric", "eval-without-dataset", "model_init-with-optimizers"])
def test_the_same_argument_checks_as_transformers(tmp_path, bad, error):
    messages = {}
    for lib in (transformers, hf_lightning):
        kwargs = dict(bad)
        eval_dataset = kwargs.pop("eval_dataset", RegressionDataset(16, seed=1))
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), **{**ARGS, **kwargs.pop("args", {})})
        kwargs.setdefault("model", None if "model_init" in kwargs else RegressionModel())
        with pytest.raises(error) as caught:
            lib.Trainer(args=args, train_dataset=RegressionDataset(), eval_dataset=eval_dataset, **kwargs)
        messages[lib.__name__] = str(caught.value).strip()
    assert messages["hf_lightning"] == messages["transformers"]


def test_label_smoothing_is_turned_off_for_multi_label_models_with_transformers_warning(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from tests.helpers.tiny import TINY_BERT

    config = BertConfig(**{k: v for k, v in TINY_BERT.items() if k != "model_type"}, num_labels=3,
                        problem_type="multi_label_classification")
    warned = {}
    for lib in (transformers, hf_lightning):
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), **{**ARGS, "label_smoothing_factor": 0.1})
        def build(lib=lib, args=args):  # hf_lightning smooths in its module, built for the first use
            return lib.Trainer(model=BertForSequenceClassification(config), args=args).create_optimizer()

        with pytest.warns(UserWarning, match="Label smoothing is not compatible with multi-label") as record:
            build()
        warned[lib.__name__] = [str(w.message) for w in record if "Label smoothing" in str(w.message)]
    assert warned["hf_lightning"] == warned["transformers"]
