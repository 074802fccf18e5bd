"""The Trainer's public methods and attributes beside transformers.Trainer: before train(), between trainings, and
what third-party callbacks read (``accelerator``, ``model_wrapped``)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import transformers

import hf_lightning
from tests.helpers.tiny import TINY_BERT, RegressionDataset, RegressionModel
from tests.helpers.wandb_run import read_offline_run

#: hf_lightning.TrainingArguments' own fields (logging_dir, torch_compile_scope): the trackers record them too
OWN_FIELDS = {f.name for f in dataclasses.fields(hf_lightning.TrainingArguments)} - {
    f.name for f in dataclasses.fields(transformers.TrainingArguments)}
from tests.parity.harness import max_rel_diff

ROOT = Path(__file__).resolve().parents[2]

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


class _TrialEvents(transformers.TrainerCallback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.events.append("begin")

    def on_evaluate(self, args, state, control, **kwargs):
        self.events.append(f"evaluate@{state.global_step}")

    def on_train_end(self, args, state, control, **kwargs):
        self.events.append("end")


def test_a_pruned_trial_ends_its_training_for_the_callbacks_as_in_transformers(tmp_path):
    """optuna's pruner stops a trial after an evaluation: the callbacks get on_train_end before TrialPruned, as
    transformers calls them; the same events, trial by trial."""
    import optuna

    seen = {}
    for lib in (transformers, hf_lightning):
        events = _TrialEvents()
        trainer = _trainer(lib, tmp_path, model_init=RegressionModel, callbacks=[events],
                           args={"eval_strategy": "epoch", "per_device_train_batch_size": 16})
        trainer.hyperparameter_search(
            hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)},
            n_trials=3, backend="optuna", sampler=optuna.samplers.TPESampler(seed=1),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0))
        seen[lib] = events.events
    assert seen[hf_lightning] == seen[transformers]
    assert seen[transformers].count("begin") == seen[transformers].count("end") == 3
    assert len(seen[transformers]) < 3 * 4  # a trial was pruned after its first evaluation


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
            "model_wrapped": trainer.model_wrapped is trainer.model, "distributed_type": acc.distributed_type,
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


class GrowingModel(RegressionModel):
    """Keeps the inputs it saw in a buffer that grows each step, and restores it in its own ``load_state_dict``
    (the shape of transformers' own resume test model)."""

    _keys_to_ignore_on_save = None  # read by transformers' load warnings

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("data_order", torch.zeros(0))

    def forward(self, input_x, labels=None, **kwargs):
        if self.training:
            self.data_order = torch.cat([self.data_order, input_x.detach().reshape(-1)[:1]])
        return super().forward(input_x, labels)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        self.data_order = state_dict["data_order"].clone()
        return super().load_state_dict({k: v for k, v in state_dict.items() if k != "data_order"}, strict=False)


class Counter(transformers.TrainerCallback, transformers.trainer_callback.ExportableState):
    def __init__(self, seen: int = 0) -> None:
        self.seen = seen

    def on_step_end(self, args, state, control, **kwargs):
        self.seen += 1

    def state(self) -> dict:
        return {"args": {"seen": self.seen}, "attributes": {}}


def test_resume_uses_the_models_load_state_dict_and_restores_each_stateful_callback_once(tmp_path):
    """A model whose buffer changes size resumes through its own ``load_state_dict``; two stateful callbacks of one
    class come back as two (restored from the checkpoint), as in transformers."""
    results = {}
    for lib in (transformers, hf_lightning):
        def make(resume_dir=None, lib=lib):
            args = lib.TrainingArguments(str(tmp_path / lib.__name__), **{**ARGS, "save_strategy": "steps",
                                                                          "save_steps": 4})
            transformers.set_seed(42)
            trainer = lib.Trainer(model=GrowingModel(), args=args, train_dataset=RegressionDataset(),
                                  callbacks=[Counter(), Counter()])
            trainer.train(resume_from_checkpoint=resume_dir)
            return trainer

        full = make()
        resumed = make(str(tmp_path / lib.__name__ / "checkpoint-4"))
        counters = [cb for cb in resumed.callback_handler.callbacks if isinstance(cb, Counter)]
        results[lib.__name__] = {
            "weights": resumed.model.state_dict(), "order": resumed.model.data_order.tolist(),
            "counters": [cb.seen for cb in counters],
        }
        assert resumed.model.data_order.tolist() == full.model.data_order.tolist()
        assert max_rel_diff(resumed.model.state_dict(), full.model.state_dict()) < 1e-7
    ours, hf = results["hf_lightning"], results["transformers"]
    assert ours["counters"] == hf["counters"] and len(ours["counters"]) == 2
    assert ours["order"] == hf["order"] and max_rel_diff(ours["weights"], hf["weights"]) < 1e-6


class _MetricsSeen(transformers.TrainerCallback):
    def __init__(self):
        self.metrics = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.metrics.append(dict(metrics))

    def on_predict(self, args, state, control, metrics=None, **kwargs):
        self.metrics.append(dict(metrics))


def test_memory_metrics_as_transformers(tmp_path):
    """skip_memory_metrics=False: the same *_mem_* keys in the train / evaluate / predict metrics and the logs."""
    keys = {}
    for lib in (transformers, hf_lightning):
        seen = _MetricsSeen()
        trainer = _trainer(lib, tmp_path, args={"skip_memory_metrics": False, "eval_strategy": "epoch"})
        trainer.add_callback(seen)
        outputs = [trainer.train().metrics, trainer.evaluate(), trainer.predict(RegressionDataset(8, seed=3)).metrics]
        keys[lib.__name__] = [sorted(k for k in m if "_mem_" in k)
                              for m in outputs + trainer.state.log_history + seen.metrics]
    assert keys["hf_lightning"] == keys["transformers"]  # on_predict sees the metrics before the memory ones
    assert "train_mem_cpu_alloc_delta" in keys["transformers"][0] and "init_mem_cpu_alloc_delta" in keys["transformers"][0]


class _Lines(__import__("logging").Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record) -> None:
        self.lines.append(record.getMessage())


def test_messages_go_through_transformers_logger(tmp_path):
    """The "Running training" block and the checkpoint warnings are on transformers' logger: its verbosity (and
    log_level) controls them."""
    from transformers.utils import logging as hf_logging

    seen = {}
    handler = _Lines()
    hf_logging.add_handler(handler)
    try:
        for lib in (transformers, hf_lightning):
            hf_logging.set_verbosity_info()
            handler.lines.clear()
            _trainer(lib, tmp_path).train()
            block = [line.split("=")[0].strip() for line in handler.lines if line.startswith(("*****", "  "))]
            seen[lib.__name__] = block
            hf_logging.set_verbosity_error()
            handler.lines.clear()
            _trainer(lib, tmp_path, args={"log_level": "error"}).train()
            assert not [line for line in handler.lines if "Running training" in line]
    finally:
        hf_logging.remove_handler(handler)
        hf_logging.set_verbosity_warning()
    assert seen["hf_lightning"][0] == "***** Running training *****"
    assert set(seen["hf_lightning"]) <= set(seen["transformers"])


class OutOfMemoryAbove(RegressionModel):
    """Raises the out-of-memory error a GPU would for training batches larger than ``limit``."""

    limit = 5

    def forward(self, input_x, labels=None, **kwargs):
        if self.training and input_x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(input_x, labels)


def test_auto_find_batch_size_retries_smaller_batches_as_transformers(tmp_path):
    runs = {}
    for lib in (transformers, hf_lightning):
        trainer = _trainer(lib, tmp_path, model=OutOfMemoryAbove(), args={"auto_find_batch_size": True})
        out = trainer.train()
        runs[lib.__name__] = {"batch": trainer.state.train_batch_size, "steps": out.global_step,
                              "weights": trainer.model.state_dict(),
                              "losses": [r["loss"] for r in trainer.state.log_history if "loss" in r]}
    ours, hf = runs["hf_lightning"], runs["transformers"]
    assert ours["batch"] == hf["batch"] == 5 and ours["steps"] == hf["steps"]  # 8 -> 7 -> 6 -> 5 (x 0.9 each time)
    assert max_rel_diff(ours["losses"], hf["losses"]) < 1e-6
    assert max_rel_diff(ours["weights"], hf["weights"]) < 1e-6


def test_without_auto_find_batch_size_out_of_memory_stops_training(tmp_path):
    with pytest.raises(torch.OutOfMemoryError):
        _trainer(hf_lightning, tmp_path, model=OutOfMemoryAbove()).train()


def test_torch_empty_cache_steps_frees_the_cache_where_transformers_does(tmp_path, monkeypatch):
    import transformers.trainer as hf_trainer_module

    from hf_lightning.callbacks import hf_flow

    calls = {"transformers": [], "hf_lightning": []}
    for lib, module in ((transformers, hf_trainer_module), (hf_lightning, hf_flow)):
        holder = {}

        def record(*args, lib=lib, holder=holder, **kwargs):
            calls[lib.__name__].append(holder["trainer"].state.global_step)

        monkeypatch.setattr(module, "clear_device_cache", record)
        holder["trainer"] = _trainer(lib, tmp_path, args={"torch_empty_cache_steps": 3,
                                                          "gradient_accumulation_steps": 2,
                                                          "per_device_train_batch_size": 4})
        holder["trainer"].train()
    assert calls["hf_lightning"] == calls["transformers"] and calls["transformers"]


def test_full_bf16_evaluation_as_transformers(tmp_path):
    results = {}
    for lib in (transformers, hf_lightning):
        trainer = _trainer(lib, tmp_path, args={"bf16_full_eval": True})
        trainer.train()
        metrics = trainer.evaluate()
        results[lib.__name__] = (metrics["eval_loss"], trainer.model.a.dtype)
    assert results["hf_lightning"][1] == results["transformers"][1] == torch.bfloat16
    assert results["hf_lightning"][0] == pytest.approx(results["transformers"][0], rel=1e-6)


def test_dataloader_worker_settings_as_transformers(tmp_path):
    seen = {}
    for lib in (transformers, hf_lightning):
        trainer = _trainer(lib, tmp_path, args={"dataloader_num_workers": 2, "dataloader_in_order": False,
                                                "dataloader_multiprocessing_context": "spawn"})
        loader = trainer.get_train_dataloader()
        context = loader.multiprocessing_context
        seen[lib.__name__] = (loader.num_workers, loader.in_order, context.get_start_method())
    assert seen["hf_lightning"] == seen["transformers"] == (2, False, "spawn")


class OverflowAt(RegressionModel):
    """Its output becomes inf from the 3rd training forward on."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, input_x, labels=None, **kwargs):
        self.calls += self.training
        if self.calls >= 3:
            input_x = input_x * float("inf")
        return super().forward(input_x, labels)


def test_debug_underflow_overflow_stops_at_the_first_inf_as_transformers(tmp_path):
    messages = {}
    for lib in (transformers, hf_lightning):
        trainer = _trainer(lib, tmp_path, model=OverflowAt(), args={"debug": "underflow_overflow"})
        with pytest.raises(ValueError, match="DebugUnderflowOverflow: inf/nan detected") as caught:
            trainer.train()
        messages[lib.__name__] = (str(caught.value), trainer.model.calls)
    assert messages["hf_lightning"] == messages["transformers"]
    with pytest.raises(ValueError, match="tpu_metrics_debug"):
        _trainer(hf_lightning, tmp_path, args={"debug": "tpu_metrics_debug"})


def test_report_to_mlflow_records_what_transformers_records(tmp_path, monkeypatch):
    """report_to="mlflow" with a real local tracking store (a file store), read back with mlflow's own client: the
    same metric names and values per step, the same parameters and the run name, as transformers.Trainer's run."""
    import mlflow  # the dev extra installs it (mlflow-skinny); users: the mlflow extra
    from mlflow.tracking import MlflowClient

    store = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store needs no database server or driver
    recorded = {}
    for lib in (transformers, hf_lightning):
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", lib.__name__)
        trainer = _trainer(lib, tmp_path, args={"report_to": ["mlflow"], "run_name": "regression",
                                                "eval_strategy": "epoch"})
        trainer.train()
        mlflow.end_run()
        client = MlflowClient(tracking_uri=store)
        experiment = client.get_experiment_by_name(lib.__name__)
        (run,) = client.search_runs([experiment.experiment_id])
        history = {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
                   for key in run.data.metrics if not key.endswith(("_runtime", "_per_second"))}
        recorded[lib.__name__] = (run.info.run_name, history, set(run.data.params))
    ours, hf = recorded["hf_lightning"], recorded["transformers"]
    assert ours[0] == hf[0] == "regression"
    assert sorted(ours[1]) == sorted(hf[1]) and {"loss", "grad_norm", "eval_loss", "train_loss"} <= set(ours[1])
    for key in hf[1]:
        assert max_rel_diff([v for _, v in ours[1][key]], [v for _, v in hf[1][key]]) < 1e-6, key
    assert {k: [s for s, _ in h] for k, h in ours[1].items()} == {k: [s for s, _ in h] for k, h in hf[1].items()}
    assert ours[2] - OWN_FIELDS == hf[2] and "learning_rate" in ours[2]  # OWN_FIELDS: hf_lightning's own fields


def test_a_dropped_trainer_is_freed_at_once_and_ends_its_mlflow_run_as_in_transformers(tmp_path, monkeypatch):
    """``del trainer`` after train() and evaluate(): transformers' Trainer is freed at once (no reference cycle), so
    its MLflowCallback ends the run evaluate() left open, and the next Trainer reports to a new run. hf_lightning's
    was kept alive by cycles until the garbage collector ran, and the next Trainer's training went into the old
    run. Checked with the garbage collector off."""
    import gc
    import weakref

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    seen = {}
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for lib in (transformers, hf_lightning):
            monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", lib.__name__)
            trainer = _trainer(lib, tmp_path, args={"report_to": ["mlflow"], "eval_strategy": "epoch"})
            trainer.train()
            trainer.evaluate()
            left_open = mlflow.active_run() is not None
            dropped = weakref.ref(trainer)
            del trainer
            seen[lib] = (left_open, dropped() is None, mlflow.active_run() is None)
            mlflow.end_run()
    finally:
        if was_enabled:
            gc.enable()
    assert seen[hf_lightning] == seen[transformers] == (True, True, True)


@pytest.mark.parametrize("tracker", ["comet_ml", "neptune", "clearml"])
def test_a_tracker_that_is_not_installed_fails_at_construction_with_its_install_line(tmp_path, tracker):
    messages = {}
    for lib in (transformers, hf_lightning):
        with pytest.raises((RuntimeError, ValueError), match="install") as caught:
            _trainer(lib, tmp_path, args={"report_to": [tracker]})
        messages[lib.__name__] = str(caught.value)
    assert messages["hf_lightning"] == messages["transformers"]


def _tracker_job(job: str, folder: Path) -> dict:
    """Runs a tracker job (both Trainers, one process of its own) and returns what it printed after RESULT."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", job, str(folder)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def _assert_same_records(ours: list[dict], theirs: list[dict], our_config, their_config) -> None:
    """The same records key for key and value for value, HF's tags among them, and the arguments as config (ours
    adds only hf_lightning's own fields)."""
    assert [sorted(r) for r in ours] == [sorted(r) for r in theirs]
    assert {"train/loss", "train/grad_norm", "train/learning_rate", "eval/loss", "train/global_step"} <= {
        k for r in ours for k in r}
    for mine, record in zip(ours, theirs):
        for key, value in record.items():
            assert mine[key] == pytest.approx(value, rel=1e-6), key
    assert set(our_config) - OWN_FIELDS == set(their_config) and "learning_rate" in our_config


TRACKIO_JOB = '''
import json, os, sys
os.environ["TRACKIO_DIR"] = sys.argv[1]  # read when trackio is imported
import transformers
import hf_lightning
from trackio import Api
from trackio.sqlite_storage import SQLiteStorage
from tests.helpers.tiny import RegressionDataset, RegressionModel

for lib in (transformers, hf_lightning):
    transformers.set_seed(42)
    args = lib.TrainingArguments(os.path.join(sys.argv[1], lib.__name__), report_to=["trackio"], project="regression",
                                 run_name=lib.__name__, use_cpu=True, logging_steps=2, num_train_epochs=1,
                                 learning_rate=0.1, disable_tqdm=True, eval_strategy="epoch")
    lib.Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(),
                eval_dataset=RegressionDataset(16, seed=1)).train()
out = {}
for run in Api().runs("regression"):
    logs = SQLiteStorage.get_logs("regression", run.name)
    out[run.name] = {"config": sorted(run.config or {}),
                     "logs": [{k: v for k, v in r.items() if not k.endswith(("runtime", "per_second"))
                               and k not in ("timestamp", "step")} for r in logs]}
print("RESULT" + json.dumps(out))
'''


def test_report_to_trackio_records_what_transformers_records(tmp_path):
    """report_to="trackio" logs to a local trackio store (no Space), read back with trackio's own API: the same
    records (names, values, steps), the arguments as the run's config and the run name, as transformers.Trainer's."""
    runs = _tracker_job(TRACKIO_JOB, tmp_path / "trackio")
    ours, hf = runs["hf_lightning"], runs["transformers"]
    _assert_same_records(ours["logs"], hf["logs"], ours["config"], hf["config"])

WANDB_JOB = '''
import json, os, sys
os.environ.update(WANDB_MODE="offline", WANDB_DIR=sys.argv[1], WANDB_SILENT="true", WANDB_PROJECT="regression")
import transformers
import wandb
import hf_lightning
from tests.helpers.tiny import RegressionDataset, RegressionModel

folders = {}
for lib in (transformers, hf_lightning):
    transformers.set_seed(42)
    args = lib.TrainingArguments(os.path.join(sys.argv[1], lib.__name__), report_to=["wandb"], run_name=lib.__name__,
                                 use_cpu=True, logging_steps=2, num_train_epochs=1, learning_rate=0.1,
                                 disable_tqdm=True, eval_strategy="epoch")
    lib.Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(),
                eval_dataset=RegressionDataset(16, seed=1)).train()
    folders[lib.__name__] = os.path.dirname(wandb.run.dir)
    wandb.finish()
print("RESULT" + json.dumps(folders))
'''


def test_report_to_wandb_records_what_transformers_records(tmp_path):
    """report_to="wandb" in offline mode, read back from each run's folder (its transaction log, parsed with wandb's
    own record schema): the same history rows (names, values, steps), the arguments as the run's config and the run
    name, as transformers.Trainer's run."""
    runs = {}  # read once the process has ended: wandb's service has closed every run's log by then
    for lib, folder in _tracker_job(WANDB_JOB, tmp_path / "wandb").items():
        run = read_offline_run(folder)
        runs[lib] = {"name": run["name"], "config": sorted(run["config"]),
                     "history": [{k: v for k, v in row.items() if not k.startswith("_")
                                  and not k.endswith(("runtime", "per_second"))} for row in run["history"]]}
    ours, hf = runs["hf_lightning"], runs["transformers"]
    assert (ours["name"], hf["name"]) == ("hf_lightning", "transformers")
    _assert_same_records(ours["history"], hf["history"], ours["config"], hf["config"])

def test_eval_use_gather_object_on_one_process_is_transformers_no_op(tmp_path):
    """eval_use_gather_object=True trains, evaluates and predicts as transformers.Trainer does with it (one process:
    nothing to gather; the 2-process gather is tests/distributed/test_gather.py)."""
    import numpy as np

    outputs = {}
    for lib in (transformers, hf_lightning):
        trainer = _trainer(lib, tmp_path, args={"eval_use_gather_object": True, "eval_strategy": "epoch"},
                           compute_metrics=lambda p: {"mean_prediction": float(np.mean(p.predictions))})
        trainer.train()
        prediction = trainer.predict(RegressionDataset(10, seed=3))
        outputs[lib.__name__] = (trainer.evaluate(), prediction)
    (ours, our_pred), (hf, hf_pred) = outputs["hf_lightning"], outputs["transformers"]
    timing = ("_runtime", "_per_second")
    assert {k for k in ours if not k.endswith(timing)} == {k for k in hf if not k.endswith(timing)}
    for key in ("eval_loss", "eval_mean_prediction"):
        assert ours[key] == pytest.approx(hf[key], rel=1e-6)
    np.testing.assert_allclose(our_pred.predictions, hf_pred.predictions, rtol=1e-6)
    np.testing.assert_array_equal(our_pred.label_ids, hf_pred.label_ids)


@pytest.mark.parametrize("args", [{"eval_do_concat_batches": False}, {"eval_accumulation_steps": 2},
                                  {"eval_do_concat_batches": False, "eval_accumulation_steps": 1}])
def test_eval_collection_options_give_transformers_outputs(tmp_path, args):
    """eval_do_concat_batches=False (a list of per-batch arrays) and eval_accumulation_steps (moved to the host every
    N batches) give transformers' predictions, labels and metrics from predict() and evaluate()."""
    import numpy as np

    seen = {}
    for lib in (transformers, hf_lightning):
        trainer = _trainer(lib, tmp_path, args={**args, "per_device_eval_batch_size": 4},
                           compute_metrics=lambda p: {"n": float(len(p.predictions))})
        prediction = trainer.predict(RegressionDataset(10, seed=3))
        metrics = trainer.evaluate()
        seen[lib.__name__] = (prediction, metrics)
    (ours, our_metrics), (hf, hf_metrics) = seen["hf_lightning"], seen["transformers"]
    concat = args.get("eval_do_concat_batches", True)
    for got, want in ((ours.predictions, hf.predictions), (ours.label_ids, hf.label_ids)):
        assert isinstance(got, np.ndarray) == isinstance(want, np.ndarray) == concat
        for a, b in zip(got if not concat else [got], want if not concat else [want]):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        assert len(got) == len(want) == (10 if concat else 3)
    assert our_metrics["eval_n"] == hf_metrics["eval_n"] == (16 if concat else 4)
    assert our_metrics["eval_loss"] == pytest.approx(hf_metrics["eval_loss"], rel=1e-6)


@pytest.mark.parametrize("args_library", [hf_lightning, transformers], ids=["hf_lightning_args", "transformers_args"])
def test_a_transformers_trainer_built_first_keeps_working_beside_ours(tmp_path, args_library):
    """A transformers.Trainer built first, then hf_lightning.Trainer (arguments from either library), both in one
    process: building TrainingArguments clears accelerate's global state, which transformers.Trainer re-creates and
    so must hf_lightning; both then evaluate and train, to the same numbers."""
    def args(lib, name):
        return lib.TrainingArguments(str(tmp_path / name), use_cpu=True, report_to=[], per_device_train_batch_size=8,
                                     max_steps=4, learning_rate=0.1, save_strategy="no", disable_tqdm=True)

    torch.manual_seed(0)
    theirs = transformers.Trainer(model=RegressionModel(), args=args(transformers, "hf"),
                                  train_dataset=RegressionDataset(), eval_dataset=RegressionDataset(length=16, seed=1))
    torch.manual_seed(0)
    ours = hf_lightning.Trainer(model=RegressionModel(), args=args(args_library, "ours"),
                                train_dataset=RegressionDataset(), eval_dataset=RegressionDataset(length=16, seed=1))
    before = theirs.evaluate()["eval_loss"], ours.evaluate()["eval_loss"]
    theirs.train()
    ours.train()
    after = theirs.evaluate()["eval_loss"], ours.evaluate()["eval_loss"]
    assert before[0] == pytest.approx(before[1], rel=1e-6) and after[0] == pytest.approx(after[1], rel=1e-6)
    assert after[0] < before[0]


def test_helper_methods_answer_as_transformers(tmp_path):
    """num_examples, floating_point_ops, get_total_train_batch_size, get_optimizer_cls_and_kwargs, the loss context
    managers an overridden training_step uses, and the model card ``create_model_card`` drafts after a run."""
    seen = {}
    for lib in (transformers, hf_lightning):
        trainer = _trainer(lib, tmp_path, args={"gradient_accumulation_steps": 2})
        train_loader, eval_loader = trainer.get_train_dataloader(), trainer.get_eval_dataloader()
        batch = next(iter(train_loader))
        with trainer.compute_loss_context_manager(), trainer.autocast_smart_context_manager():
            loss = trainer.compute_loss(trainer.model, batch)
        cls, kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, trainer.model)
        seen[lib] = (trainer.num_examples(train_loader), trainer.num_examples(eval_loader),
                     trainer.floating_point_ops(batch), trainer.get_total_train_batch_size(trainer.args),
                     cls, kwargs, float(loss))
        # a model with a config, trained and evaluated, for the model card
        texts = np.random.default_rng(0).integers(1, 1000, (12, 8))
        data = datasets.Dataset.from_dict({"input_ids": texts.tolist(), "labels": (texts[:, 0] % 2).tolist()})
        args = lib.TrainingArguments(str(tmp_path / f"card-{lib.__name__}"), **{**ARGS, "num_train_epochs": 1})
        transformers.set_seed(0)
        model = transformers.BertForSequenceClassification(transformers.AutoConfig.for_model(**TINY_BERT))
        carded = lib.Trainer(model=model, args=args, train_dataset=data, eval_dataset=data)
        carded.train()
        carded.evaluate()
        carded.create_model_card(model_name="tiny-classifier", language="en", tags=["tiny"])
        seen[lib] += ((Path(args.output_dir) / "README.md").read_text(),)
    assert seen[hf_lightning][:6] == seen[transformers][:6]
    assert seen[hf_lightning][6] == pytest.approx(seen[transformers][6], rel=1e-6)
    assert seen[hf_lightning][7] == seen[transformers][7] and "tiny-classifier" in seen[transformers][7]


class _TrialSpy(transformers.TrainerCallback):
    """What each trial's training sees: its name, whether output_dir is still the Trainer's own, the rate."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir, self.trials = output_dir, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.trials.append((state.trial_name, args.output_dir == self.output_dir, args.learning_rate))


@pytest.mark.parametrize("named", [False, True])
def test_hyperparameter_search_keeps_transformers_bookkeeping(tmp_path, named):
    """Trial folders (``run-<number>`` or ``hp_name``'s), ``state.trial_name`` (None without ``hp_name``), the
    arguments keeping ``output_dir`` during a trial and the last trial's values after the search, the BestRun."""
    seen = {}
    for lib in (transformers, hf_lightning):
        spy = _TrialSpy(str(tmp_path / lib.__name__))
        trainer = _trainer(lib, tmp_path, model_init=RegressionModel, callbacks=[spy],
                           args={"eval_strategy": "epoch", "save_strategy": "epoch", "num_train_epochs": 1})
        best = trainer.hyperparameter_search(
            hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 0.3, log=True)},
            n_trials=2, direction="minimize", hp_name=(lambda trial: f"trial{trial.number}") if named else None,
            sampler=__import__("optuna").samplers.TPESampler(seed=0))
        out = Path(trainer.args.output_dir)
        folders = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_dir())
        seen[lib] = (best.run_id, best.hyperparameters, spy.trials, folders, trainer.args.learning_rate,
                     trainer.state.trial_name, round(best.objective, 6))
    assert seen[hf_lightning] == seen[transformers]
    assert seen[transformers][3][0] == ("trial0" if named else "run-0")


def test_each_hyperparameter_trial_reports_to_its_own_run(tmp_path):
    """report_to: every trial writes its own run (in its trial folder), its steps from 1 again; not one file that
    all trials append to."""
    trainer = _trainer(hf_lightning, tmp_path, model_init=RegressionModel,
                       args={"report_to": ["csv"], "max_steps": 3, "eval_strategy": "steps", "eval_steps": 3})
    trainer.hyperparameter_search(
        hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 0.3, log=True)},
        n_trials=2, direction="minimize")
    out = Path(trainer.args.output_dir)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("metrics.csv"))
    assert files == ["run-0/logs/version_0/metrics.csv", "run-1/logs/version_0/metrics.csv"]
    for name in files:
        steps = [int(row["step"]) for row in csv.DictReader((out / name).open()) if row.get("train/loss")]
        assert steps == [1, 2, 3]


def test_push_to_hub_says_what_to_do_instead(tmp_path):
    trainer = _trainer(hf_lightning, tmp_path)
    for method in (trainer.push_to_hub, trainer.init_hf_repo):
        with pytest.raises(NotImplementedError, match=r"trainer\.save_model\(folder\).*model\.push_to_hub\(repo_id\)"):
            method()


def _error(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the error itself is compared
        return type(error).__name__, str(error)
    return None


class _NoLoss(RegressionModel):
    def forward(self, input_x, labels=None, **kwargs):
        return {"logits": input_x * self.a + self.b}


@pytest.mark.parametrize("case", ["train_kwarg", "stream_without_max_steps", "optimizers_and_cls", "no_loss",
                                  "eval_strategy_without_eval_set"])
def test_misuse_raises_transformers_error_and_message(tmp_path, case):
    from tests.helpers.tiny import IterableRegression

    def attempt(lib):
        if case == "eval_strategy_without_eval_set":
            args = lib.TrainingArguments(str(tmp_path / lib.__name__), eval_strategy="steps", report_to=[])
            return lambda: lib.Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset())
        if case == "no_loss":
            return _trainer(lib, tmp_path, model=_NoLoss()).train
        if case == "optimizers_and_cls":
            model = RegressionModel()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            return lambda: _trainer(lib, tmp_path, model=model, optimizers=(optimizer, None),
                                    optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.1}))
        trainer = _trainer(lib, tmp_path)
        if case == "train_kwarg":
            return lambda: trainer.train(foo=1)
        trainer.train_dataset = IterableRegression(8)  # set after building: train() finds no length
        return trainer.train

    errors = {lib: _error(attempt(lib)) for lib in (transformers, hf_lightning)}
    assert errors[transformers] is not None
    assert errors[hf_lightning] == errors[transformers]


def test_optimizers_without_the_optimizer_are_refused_up_front(tmp_path):
    """docs/parity.md, deliberate difference 18: transformers would train an optimizer of its own while the given
    scheduler steps another one."""
    model = RegressionModel()
    scheduler = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(model.parameters(), lr=0.1), step_size=1)
    with pytest.raises(ValueError, match=r"optimizers=\(None, scheduler\).*optimizers=\(optimizer, scheduler\)"):
        _trainer(hf_lightning, tmp_path, model=model, optimizers=(None, scheduler))


@pytest.mark.parametrize("restore", [True, False])
def test_a_resume_may_add_early_stopping_the_checkpoint_did_not_have(tmp_path, restore):
    """docs/parity.md, deliberate difference 19: transformers 5.25 raises a KeyError at the resumed run's first
    save; hf_lightning trains on and saves the new callback's state."""
    args = {"save_strategy": "epoch", "eval_strategy": "epoch", "metric_for_best_model": "loss",
            "num_train_epochs": 1}
    first = {}
    for lib in (transformers, hf_lightning):
        _trainer(lib, tmp_path, args=args).train()
        resumed = _trainer(lib, tmp_path, args={**args, "num_train_epochs": 3,
                                                "restore_callback_states_from_checkpoint": restore},
                           callbacks=[transformers.EarlyStoppingCallback(early_stopping_patience=5)])
        first[lib] = _error(lambda resumed=resumed, lib=lib: resumed.train(
            resume_from_checkpoint=str(tmp_path / lib.__name__ / "checkpoint-8")))
    assert first[transformers] == ("KeyError", "'EarlyStoppingCallback'")
    assert first[hf_lightning] is None
    saved = json.loads((tmp_path / "hf_lightning" / "checkpoint-24" / "trainer_state.json").read_text())
    assert "EarlyStoppingCallback" in saved["stateful_callbacks"]


def test_a_folder_without_trainer_state_is_not_resumed_from_as_in_transformers(tmp_path):
    """Both raise a FileNotFoundError naming the missing trainer_state.json (hf_lightning before loading anything)."""
    _trainer(transformers, tmp_path, args={"max_steps": 2, "save_strategy": "steps", "save_steps": 2}).train()
    folder = tmp_path / "transformers" / "checkpoint-2"
    os.remove(folder / "trainer_state.json")
    for lib in (transformers, hf_lightning):
        with pytest.raises(FileNotFoundError, match=r"No such file or directory.*trainer_state\.json"):
            _trainer(lib, tmp_path / "resumed", args={"max_steps": 4}).train(resume_from_checkpoint=str(folder))


def _public(obj) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


def test_every_public_name_of_transformers_trainer_is_there_before_and_after_train(tmp_path):
    """A script ported by changing the import finds every public method and attribute transformers.Trainer has
    (``end``, ``get_resumed_dataloader``, ``set_initial_training_values``, ``hub_model_id``, the XLA / distributed
    loading flags, ``current_gradient_accumulation_steps`` after training...), and the flags answer as there."""
    built = {lib: _trainer(lib, tmp_path, args={"gradient_accumulation_steps": 3}) for lib in (transformers,
                                                                                              hf_lightning)}
    assert _public(built[transformers]) - _public(built[hf_lightning]) == set()
    for trainer in built.values():
        trainer.train()
    assert _public(built[transformers]) - _public(built[hf_lightning]) == set()
    flags = ("hub_model_id", "is_fsdp_xla_enabled", "is_fsdp_xla_v1_enabled", "is_fsdp_xla_v2_enabled",
             "is_distributed_loading_by_transformers", "current_gradient_accumulation_steps")
    assert [getattr(built[hf_lightning], f) for f in flags] == [getattr(built[transformers], f) for f in flags]
    seen = {}
    for lib, trainer in built.items():
        loader = trainer.get_train_dataloader()
        values = trainer.set_initial_training_values(trainer.args, loader)
        skipped = [batch["input_x"].tolist() for batch in trainer.get_resumed_dataloader(loader, 2)]
        trainer.end()  # one process: nothing to end, as in transformers
        seen[lib] = (values, skipped)
    assert seen[hf_lightning] == seen[transformers]


def test_current_gradient_accumulation_steps_is_each_windows_size_as_in_transformers(tmp_path):
    """transformers' ``training_step`` divides the loss by ``self.current_gradient_accumulation_steps``, the number
    of micro-batches in the running window (the last window of an epoch may be shorter): an override copied from it
    reads the same value at every micro-batch."""
    seen = {}
    for lib in (transformers, hf_lightning):
        class Recording(lib.Trainer):
            def training_step(self, model, inputs, num_items_in_batch=None):
                self.sizes.append(self.current_gradient_accumulation_steps)
                return super().training_step(model, inputs, num_items_in_batch)

        args = lib.TrainingArguments(str(tmp_path / lib.__name__), **{**ARGS, "gradient_accumulation_steps": 3,
                                                                       "per_device_train_batch_size": 16})
        transformers.set_seed(42)
        trainer = Recording(model=RegressionModel(), args=args, train_dataset=RegressionDataset())
        trainer.sizes = []
        trainer.train()
        seen[lib] = trainer.sizes
    assert seen[hf_lightning] == seen[transformers]
    assert set(seen[transformers]) == {3, 1}  # 64 samples / 16 = 4 micro-batches per epoch: a window of 3, then 1


@pytest.mark.parametrize("args", [{}, {"eval_strategy": "epoch"}, {"eval_strategy": "steps", "eval_steps": 3}],
                         ids=["no-evaluation", "per-epoch", "per-steps-and-at-the-last-step"])
def test_the_model_mode_after_train_is_transformers(tmp_path, args):
    """transformers' evaluation sets eval mode and only a next training step sets train mode again: after train() the
    model is in eval mode where an evaluation came after the last step (dropout off for the script's own forwards),
    in train mode otherwise."""
    modes = {}
    for lib in (transformers, hf_lightning):
        trainer = _trainer(lib, tmp_path, args={**args, "num_train_epochs": 1})  # 64 samples / 8: 8 steps
        trainer.train()
        modes[lib] = trainer.model.training
    assert modes[hf_lightning] == modes[transformers]
    assert modes[transformers] == (not args)  # train mode without evaluation, eval mode after the final one
