"""Trainer subclasses written for transformers.Trainer run unchanged on hf_lightning.Trainer, with the same numbers."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import transformers
from torch.utils.data import DataLoader, SequentialSampler

import hf_lightning
from tests.helpers.tiny import RegressionDataset, RegressionModel, StrictRegressionModel
from tests.parity.harness import assert_same, max_rel_diff, run, strip_speed

REG = dict(per_device_train_batch_size=8, num_train_epochs=2, learning_rate=0.1)


class WeightedLoss:
    """A tutorial-style compute_loss: L1 loss with the 5.x signature."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = torch.nn.functional.l1_loss(outputs[0], labels.to(outputs[0].dtype))
        return (loss, outputs) if return_outputs else loss


class OldSignatureLoss:
    """The pre-5.x signature tutorials still use (transformers 5.x itself calls it with num_items_in_batch)."""

    def compute_loss(self, model, inputs, return_outputs=False):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = torch.nn.functional.l1_loss(outputs[0], labels.to(outputs[0].dtype))
        return (loss, outputs) if return_outputs else loss


class SgdOptimizer:
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        return self.optimizer


class ConstantSchedule:
    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, lambda step: 0.5)
        return self.lr_scheduler


class RecordingStep:
    """training_step override that calls super() and records what it saw."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.seen = getattr(self, "seen", 0) + len(inputs["labels"])
        return super().training_step(model, inputs, num_items_in_batch)


class SequentialLoader:
    def get_train_dataloader(self):
        return DataLoader(self.train_dataset, batch_size=self.args.per_device_train_batch_size,
                          sampler=SequentialSampler(self.train_dataset),
                          collate_fn=transformers.default_data_collator)


class LogCapture:
    def log(self, logs, start_time=None):
        self.captured = getattr(self, "captured", []) + [dict(logs)]
        super().log(logs, start_time)


class DecayOnlyTheSlope:
    def get_decay_parameter_names(self, model):
        return ["a"]


def _subclass(base: type, *mixins: type) -> type:
    return type(f"{base.__name__}With{''.join(m.__name__ for m in mixins)}", (*mixins, base), {})


@pytest.mark.parametrize("mixins", [(WeightedLoss,), (SgdOptimizer,), (SgdOptimizer, ConstantSchedule),
                                    (RecordingStep,), (SequentialLoader,)],
                         ids=lambda m: "+".join(c.__name__ for c in m))
def test_overrides_give_transformers_numbers(tmp_path, mixins):
    hf = run(_subclass(transformers.Trainer, *mixins), StrictRegressionModel, RegressionDataset(), tmp_path, **REG)
    ours = run(_subclass(hf_lightning.Trainer, *mixins), StrictRegressionModel, RegressionDataset(), tmp_path, **REG)
    assert_same(hf, ours, rtol=1e-6)
    if RecordingStep in mixins:
        assert ours.trainer.seen == hf.trainer.seen == 128


def test_old_compute_loss_signature_runs(tmp_path):
    """The old signature equals the new one (the L1 loss is a per-batch mean either way)."""
    old = run(_subclass(hf_lightning.Trainer, OldSignatureLoss), RegressionModel, RegressionDataset(), tmp_path / "o",
              gradient_accumulation_steps=2, **dict(REG, per_device_train_batch_size=4))
    new = run(_subclass(hf_lightning.Trainer, WeightedLoss), RegressionModel, RegressionDataset(), tmp_path / "n",
              gradient_accumulation_steps=2, **dict(REG, per_device_train_batch_size=4))
    assert max_rel_diff(old.weights, new.weights) < 1e-7
    with pytest.raises(TypeError, match="num_items_in_batch"):
        run(_subclass(transformers.Trainer, OldSignatureLoss), RegressionModel, RegressionDataset(), tmp_path / "h",
            **REG)


def test_log_override_sees_every_record(tmp_path):
    hf = run(_subclass(transformers.Trainer, LogCapture), StrictRegressionModel, RegressionDataset(), tmp_path, **REG)
    ours = run(_subclass(hf_lightning.Trainer, LogCapture), StrictRegressionModel, RegressionDataset(), tmp_path,
               **REG)
    strip = lambda rows: [{k: v for k, v in r.items() if "runtime" not in k and "per_second" not in k} for r in rows]
    assert max_rel_diff(strip(ours.trainer.captured), strip(hf.trainer.captured)) < 1e-6


def test_optimizers_tuple_and_optimizer_cls_and_kwargs(tmp_path):
    def with_tuple(cls):
        def build():
            model = StrictRegressionModel()
            build.opt = torch.optim.SGD(model.parameters(), lr=0.05)
            build.sched = torch.optim.lr_scheduler.StepLR(build.opt, step_size=3, gamma=0.5)
            return model
        return build

    results = []
    for cls in (transformers.Trainer, hf_lightning.Trainer):
        args_cls = transformers.TrainingArguments if cls is transformers.Trainer else hf_lightning.TrainingArguments
        args = args_cls(str(tmp_path / cls.__module__), report_to=[], use_cpu=True, save_strategy="no",
                        logging_steps=1, disable_tqdm=True, **REG)
        transformers.set_seed(42)
        build = with_tuple(cls)
        model = build()
        trainer = cls(model=model, args=args, train_dataset=RegressionDataset(), optimizers=(build.opt, build.sched))
        trainer.train()
        results.append((trainer.model.state_dict(), trainer.state.log_history))
    assert max_rel_diff(results[1][0], results[0][0]) < 1e-6
    assert [r["learning_rate"] for r in results[1][1][:-1]] == [r["learning_rate"] for r in results[0][1][:-1]]

    kwargs = {"trainer_kwargs": {"optimizer_cls_and_kwargs": (torch.optim.Adam, {"lr": 0.05})}}
    hf = run(transformers.Trainer, StrictRegressionModel, RegressionDataset(), tmp_path / "x", **kwargs, **REG)
    ours = run(hf_lightning.Trainer, StrictRegressionModel, RegressionDataset(), tmp_path / "y", **kwargs, **REG)
    assert_same(hf, ours, rtol=1e-6)


def test_an_overridden_get_decay_parameter_names_decides_which_weights_decay(tmp_path):
    """transformers' create_optimizer asks ``self.get_decay_parameter_names`` (here: the slope only, not the bias)."""
    decayed = dict(REG, weight_decay=0.5, optim="adamw_torch")
    hf = run(_subclass(transformers.Trainer, DecayOnlyTheSlope), StrictRegressionModel, RegressionDataset(),
             tmp_path / "hf", **decayed)
    ours = run(_subclass(hf_lightning.Trainer, DecayOnlyTheSlope), StrictRegressionModel, RegressionDataset(),
               tmp_path / "ours", **decayed)
    assert_same(hf, ours, rtol=1e-6)
    groups = [[n for n, p in ours.trainer.model.named_parameters() if any(p is q for q in g["params"])]
              for g in ours.trainer.optimizer.param_groups]
    assert groups == [["a"], ["b"]]
    default = run(hf_lightning.Trainer, StrictRegressionModel, RegressionDataset(), tmp_path / "default", **decayed)
    assert max_rel_diff(default.weights, ours.weights) > 1e-4  # the bias decays by default


@pytest.mark.parametrize(("model", "count"), [(StrictRegressionModel, None), (RegressionModel, 8)])
def test_compute_loss_is_called_as_transformers_calls_it_without_accumulation(tmp_path, model, count):
    """One micro-batch per step: one call per step, in train mode (no probe), with the batch's label count where
    transformers passes it (a model whose forward takes loss keywords), else None."""
    calls = {}
    for base in (transformers.Trainer, hf_lightning.Trainer):
        seen = calls[base] = []

        class Recording(base):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None, seen=seen):
                seen.append((model.training, None if num_items_in_batch is None else int(num_items_in_batch)))
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        run(Recording, model, RegressionDataset(), tmp_path / base.__module__, **REG)
    assert calls[hf_lightning.Trainer] == calls[transformers.Trainer] == [(True, count)] * 16


class SgdFactory:
    """Not an Optimizer class: transformers calls ``SgdFactory()(model, **kwargs)`` (how Muon / Dion are built)."""

    def __call__(self, model, lr):
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def test_an_optimizer_factory_is_called_with_the_model_as_in_transformers(tmp_path):
    given = {"optimizer_cls_and_kwargs": (SgdFactory, {"lr": 0.05})}
    hf = run(transformers.Trainer, StrictRegressionModel, RegressionDataset(), tmp_path / "hf", trainer_kwargs=given,
             **REG)
    ours = run(hf_lightning.Trainer, StrictRegressionModel, RegressionDataset(), tmp_path / "ours",
               trainer_kwargs=given, **REG)
    assert_same(hf, ours, rtol=1e-6)
    assert type(ours.trainer.optimizer) is torch.optim.SGD and len(ours.trainer.optimizer.param_groups) == 1


def _count_then_extra(extra: str):
    """A compute_loss written for transformers 5.x: the summed error over ``num_items_in_batch``, plus a term the count
    does not divide (an L2 penalty, or noise drawn per call)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        y = model(inputs["input_x"])[0]
        loss = ((y - inputs["labels"]) ** 2).sum() / num_items_in_batch
        if extra == "l2":
            loss = loss + (model.a ** 2 + model.b ** 2)
        else:
            loss = loss + 0.1 * torch.rand(()).item()
        return (loss, y) if return_outputs else loss

    return compute_loss


@pytest.mark.parametrize("extra", ["l2", "noise"])
def test_a_loss_over_the_count_with_an_extra_term_accumulates_as_in_transformers(tmp_path, extra):
    """Not clear-cut for hf_lightning's check (docs/parity.md, deliberate difference 1): neither halved by a doubled
    count nor unchanged by it. transformers' rule then applies: the count of the whole window is passed to
    compute_loss and the loss is not divided by the accumulation steps; the same records and weights."""
    seen = {}
    for lib in (transformers, hf_lightning):
        cls = type("CountedLoss", (lib.Trainer,), {"compute_loss": _count_then_extra(extra)})
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                                     save_strategy="no", logging_steps=1, per_device_train_batch_size=8,
                                     gradient_accumulation_steps=2, num_train_epochs=1, learning_rate=0.1)
        transformers.set_seed(42)
        model = RegressionModel()
        with torch.no_grad():
            model.a.fill_(0.5)
        run_ = cls(model=model, args=args, train_dataset=RegressionDataset())
        result = run_.train()
        seen[lib] = ([{k: v for k, v in r.items() if "runtime" not in k and "per_second" not in k}
                      for r in run_.state.log_history], result.training_loss,
                     {k: v.clone() for k, v in model.state_dict().items()})
    assert max_rel_diff(seen[hf_lightning][:2], seen[transformers][:2]) <= 1e-5
    assert max_rel_diff(seen[hf_lightning][2], seen[transformers][2]) <= 1e-5


class StepEndOverrides:
    """transformers' step-end methods overridden as research code does: an extra record at logging steps, an extra
    metric, an extra file in each checkpoint; each call recorded with what it was given."""

    def _maybe_log_save_evaluate(self, tr_loss, grad_norm, model, trial, epoch, ignore_keys_for_eval, start_time,
                                 learning_rate=None):
        self.calls.append(("step_end", self.state.global_step, float(tr_loss), epoch, learning_rate,
                           None if grad_norm is None else float(grad_norm), model is self.model, trial,
                           self.control.should_log, self.control.should_evaluate, self.control.should_save,
                           self._globalstep_last_logged))
        if self.control.should_log and self.state.global_step % 2:
            self.log({"odd_step": float(self.state.global_step)})  # on_log resets should_log, as transformers'
        super()._maybe_log_save_evaluate(tr_loss, grad_norm, model, trial, epoch, ignore_keys_for_eval, start_time,
                                         learning_rate)

    def _evaluate(self, trial, ignore_keys_for_eval, skip_scheduler=False):
        metrics = dict(super()._evaluate(trial, ignore_keys_for_eval, skip_scheduler))
        self.calls.append(("evaluate", self.state.global_step, sorted(metrics), skip_scheduler))
        metrics["eval_step"] = float(self.state.global_step)  # seen by the best-model choice, not logged
        return metrics

    def _save_checkpoint(self, model, trial):
        if self.state.global_step == 8:  # no super(): no checkpoint at step 8, on_save still comes
            self.calls.append(("skipped", 8))
            return
        super()._save_checkpoint(model, trial)
        folder = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
        self.calls.append(("saved", self.state.global_step, os.path.isdir(folder),
                           os.path.basename(self.state.best_model_checkpoint or "")))
        with open(os.path.join(folder, "note.txt"), "w") as f:
            f.write(str(self.state.global_step))


class SaveEvents(transformers.TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_save(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_overridden_step_end_methods_are_called_as_in_transformers(tmp_path):
    """``_maybe_log_save_evaluate``, ``_evaluate`` and ``_save_checkpoint`` overrides: the same calls with the same
    arguments, records, best checkpoint, checkpoint folders (with the override's file), and no warning."""
    outcomes = []
    for library in (transformers, hf_lightning):
        events = SaveEvents()
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no "override not called" warning
            hf_side = library is transformers
            trainer = _subclass(library.Trainer, StepEndOverrides)(
                model=StrictRegressionModel(), train_dataset=RegressionDataset(length=40), callbacks=[events],
                eval_dataset=RegressionDataset(length=16, seed=1), args=library.TrainingArguments(
                    str(tmp_path / library.__name__), report_to=[], use_cpu=True, disable_tqdm=True,
                    per_device_train_batch_size=8, num_train_epochs=3, learning_rate=0.1, logging_steps=3,
                    eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=4, save_total_limit=2,
                    load_best_model_at_end=True, metric_for_best_model="loss",
                    eval_on_start=True, lr_scheduler_type="reduce_lr_on_plateau"))
        assert hf_side or isinstance(trainer, hf_lightning.Trainer)
        trainer.calls = []
        transformers.set_seed(0)
        out = trainer.train()
        folders = {name: sorted(set(os.listdir(tmp_path / library.__name__ / name)) - {"training_args.json"})
                   for name in os.listdir(tmp_path / library.__name__)}
        outcomes.append((trainer.calls, strip_speed(trainer.state.log_history), folders, events.steps,
                         os.path.basename(trainer.state.best_model_checkpoint), out.global_step, out.training_loss))
    (hf_calls, hf_log, hf_folders, hf_saves, hf_best, hf_steps, hf_loss), ours = outcomes
    assert ours[2:6] == (hf_folders, hf_saves, hf_best, hf_steps)
    assert sorted(hf_folders) == ["checkpoint-12", "checkpoint-15"] and "note.txt" in hf_folders["checkpoint-15"]
    assert [c[:2] for c in ours[0]] == [c[:2] for c in hf_calls] and ("skipped", 8) in hf_calls
    assert max_rel_diff(ours[0], hf_calls) < 1e-6  # float32 running loss summed in another order
    assert max_rel_diff(ours[1], hf_log) < 1e-6 and max_rel_diff(ours[6], hf_loss) < 1e-6
    assert any("odd_step" in r for r in hf_log)


def test_step_end_methods_outside_train_say_what_to_use(tmp_path):
    trainer = hf_lightning.Trainer(model=RegressionModel(), args=hf_lightning.TrainingArguments(
        str(tmp_path), report_to=[], use_cpu=True), eval_dataset=RegressionDataset(length=8))
    with pytest.raises(RuntimeError, match="inside train"):
        trainer._save_checkpoint(trainer.model, None)
    metrics = trainer._evaluate(None, None)  # as transformers: evaluate() outside training
    assert "eval_loss" in metrics
    with pytest.raises(ValueError, match="best_model_checkpoint is None"):
        trainer._load_best_model()
    best = tmp_path / "checkpoint-1"
    trainer.save_model(str(best))
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        trainer.model.a.add_(1.0)
    trainer.state.best_model_checkpoint = str(best)
    trainer._load_best_model()  # as transformers: the folder's weights back in the model
    assert max_rel_diff(trainer.model.state_dict(), saved) == 0.0


class RecordBestLoad:
    def _load_best_model(self):
        self.loaded = (self.state.global_step, os.path.basename(self.state.best_model_checkpoint))
        super()._load_best_model()


class KeepLastWeights:
    def _load_best_model(self):  # no super(): the last step's weights stay
        self.loaded = "skipped"


@pytest.mark.parametrize("mixin", [RecordBestLoad, KeepLastWeights])
def test_an_overridden_load_best_model_is_called_at_the_end_as_in_transformers(tmp_path, mixin):
    args = dict(REG, eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                metric_for_best_model="step_score", greater_is_better=False, num_train_epochs=3)

    def first_epoch_best(prediction):  # the best checkpoint is the first, so loading it changes the weights
        first_epoch_best.calls = getattr(first_epoch_best, "calls", 0) + 1
        return {"step_score": float(first_epoch_best.calls % 3 or 3)}

    kwargs = dict(eval_dataset=RegressionDataset(length=16, seed=1), evaluate=False,
                  trainer_kwargs={"compute_metrics": first_epoch_best})
    hf = run(_subclass(transformers.Trainer, mixin), StrictRegressionModel, RegressionDataset(), tmp_path, **kwargs,
             **args)
    first_epoch_best.calls = 0
    ours = run(_subclass(hf_lightning.Trainer, mixin), StrictRegressionModel, RegressionDataset(), tmp_path,
               **kwargs, **args)
    assert ours.trainer.loaded == hf.trainer.loaded
    assert hf.trainer.loaded in ("skipped", (24, "checkpoint-8"))
    assert_same(hf, ours, rtol=1e-6)


class ShiftedResume:
    """A resume that loads the checkpoint's weights, then changes them: the run goes on from what it left."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        self.resumed_from = os.path.basename(resume_from_checkpoint)
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        with torch.no_grad():
            self.model.a.add_(0.5)


def test_an_overridden_load_from_checkpoint_loads_the_resumed_weights_as_in_transformers(tmp_path):
    outcomes = []
    for library in (transformers, hf_lightning):
        out = str(tmp_path / library.__name__)

        def trainer(cls, max_steps, library=library, out=out):
            transformers.set_seed(0)
            return cls(model=StrictRegressionModel(), train_dataset=RegressionDataset(), args=library.TrainingArguments(
                out, report_to=[], use_cpu=True, disable_tqdm=True, logging_steps=1, save_strategy="steps",
                save_steps=4, max_steps=max_steps, **REG))

        trainer(library.Trainer, 6).train()
        resumed = trainer(_subclass(library.Trainer, ShiftedResume), 10)
        resumed.train(resume_from_checkpoint=True)
        outcomes.append((resumed.resumed_from, strip_speed(resumed.state.log_history),
                         {k: v.clone() for k, v in resumed.model.state_dict().items()}))
    (hf_from, hf_log, hf_weights), (from_, log, weights) = outcomes
    assert from_ == hf_from == "checkpoint-6"
    assert max_rel_diff(log, hf_log) < 1e-6 and max_rel_diff(weights, hf_weights) < 1e-6


class KeepWeightColumn:
    """TRL-style: the loss needs a column the model's forward does not take, kept by the signature columns."""

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["input_x", "labels", "weight"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weight = inputs.pop("weight")
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = (weight * (outputs[0] - labels) ** 2).mean()
        return (loss, outputs) if return_outputs else loss


class SetColumnsInInit(KeepWeightColumn):
    _set_signature_columns_if_needed = transformers.Trainer._set_signature_columns_if_needed

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._signature_columns = ["input_x", "labels", "weight"]  # a script's choice, kept by the base method


@pytest.mark.parametrize("mixin", [KeepWeightColumn, SetColumnsInInit])
def test_the_signature_columns_a_subclass_sets_are_the_columns_loaders_keep(tmp_path, mixin):
    import datasets

    data = RegressionDataset()
    rows = {"input_x": data.x.tolist(), "labels": data.y.tolist(), "weight": [1.0 + i % 3 for i in range(len(data))],
            "note": ["dropped"] * len(data)}
    dataset = datasets.Dataset.from_dict(rows)
    if mixin is SetColumnsInInit:  # the base method of the library the subclass runs on
        hf_mixin = mixin
        ours_mixin = type("SetColumnsInInit", (SetColumnsInInit,), {
            "_set_signature_columns_if_needed": hf_lightning.Trainer._set_signature_columns_if_needed})
    else:
        hf_mixin = ours_mixin = mixin
    hf = run(_subclass(transformers.Trainer, hf_mixin), StrictRegressionModel, dataset, tmp_path, **REG)
    ours = run(_subclass(hf_lightning.Trainer, ours_mixin), StrictRegressionModel, dataset, tmp_path, **REG)
    assert_same(hf, ours, rtol=1e-6)
    assert ours.trainer._signature_columns == hf.trainer._signature_columns == ["input_x", "labels", "weight"]
    batch = next(iter(ours.trainer.get_train_dataloader()))
    assert sorted(batch) == ["input_x", "labels", "weight"]


class StepsSeen:
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.steps_seen = getattr(self, "steps_seen", []) + [(self.state.global_step, len(self.state.log_history))]
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def test_overrides_read_the_live_state_in_a_resumed_run(tmp_path):
    """A resume replaces the state with the checkpoint's: an override reading ``self.state`` sees the resumed
    step and history at every step, as in transformers."""
    seen = []
    for library in (transformers, hf_lightning):
        out = str(tmp_path / library.__name__)
        for max_steps, resume in ((4, None), (7, True)):
            transformers.set_seed(0)
            trainer = _subclass(library.Trainer, StepsSeen)(
                model=StrictRegressionModel(), train_dataset=RegressionDataset(), args=library.TrainingArguments(
                    out, report_to=[], use_cpu=True, disable_tqdm=True, logging_steps=1, save_steps=4,
                    max_steps=max_steps, **REG))
            trainer.train(resume_from_checkpoint=resume)
        seen.append(trainer.steps_seen)
    assert seen[1] == seen[0] == [(4, 4), (5, 5), (6, 6)]


class RecordRemoval:
    def _remove_unused_columns(self, dataset, description=None):
        self.removals = getattr(self, "removals", set()) | {(description, tuple(sorted(dataset.column_names)))}
        return super()._remove_unused_columns(dataset, description)


def test_an_overridden_remove_unused_columns_gets_each_data_set_as_in_transformers(tmp_path):
    """Each ``datasets.Dataset`` a loader is built from goes through the override, with transformers' description
    (Training / Evaluation / test); its super() removes the columns the model does not take."""
    import datasets

    def table(n, seed):
        data = RegressionDataset(length=n, seed=seed)
        return datasets.Dataset.from_dict({"input_x": data.x.tolist(), "labels": data.y.tolist(), "note": ["x"] * n})

    runs = []
    for library in (transformers, hf_lightning):
        runs.append(run(_subclass(library.Trainer, RecordRemoval), StrictRegressionModel, table(32, 42), tmp_path,
                        eval_dataset=table(8, 1), predict_dataset=table(8, 2), evaluate=True, eval_strategy="epoch",
                        **REG))
    hf, ours = runs
    assert ours.trainer.removals == hf.trainer.removals == {
        (name, ("input_x", "labels", "note")) for name in ("Training", "Evaluation", "test")}
    assert_same(hf, ours, rtol=1e-6)


class OwnWindowCount:
    """A ``get_batch_samples`` override as token-counting research code writes it: super() draws the window, the
    count is its own (``None``: the loss is a mean, divided by the window's micro-batches); each call recorded."""

    extra_items = 8

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, count = super().get_batch_samples(epoch_iterator, num_batches, device)
        self.drawn = getattr(self, "drawn", []) + [(num_batches, len(batches), None if count is None else float(count))]
        if self.extra_items is None:
            return batches, None
        return batches, torch.tensor(float(sum(len(batch["labels"]) for batch in batches) + self.extra_items))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        y = model(inputs["input_x"])[0]
        error = (y - inputs["labels"]) ** 2
        loss = error.mean() if num_items_in_batch is None else error.sum() / num_items_in_batch
        return (loss, y) if return_outputs else loss


class NoWindowCount(OwnWindowCount):
    extra_items = None


class OwnWindowCountScaled(OwnWindowCount):
    """transformers divides a loss by the accumulation steps unless the model's forward takes the count or this says
    the loss is over the count (hf_lightning finds that out itself: docs/parity.md, deliberate difference 1)."""

    loss_is_scaled_for_ga = True


@pytest.mark.parametrize("mixin, model, accumulate", [(OwnWindowCount, RegressionModel, 3),
                                                      (NoWindowCount, RegressionModel, 3),
                                                      (OwnWindowCount, StrictRegressionModel, 1),
                                                      (OwnWindowCountScaled, StrictRegressionModel, 3)],
                         ids=["count", "no-count", "count-strict-model", "count-strict-model-accumulating"])
def test_an_overridden_get_batch_samples_draws_each_window_as_in_transformers(tmp_path, mixin, model, accumulate):
    """Called once per accumulation window with the batches it may take (3, 3, then the epoch's short last window
    of 2), what it returns trains: the count it gives goes to compute_loss (also for a model whose forward takes no
    count, and without accumulation); without one the loss is divided by the window's micro-batches; the same
    records and weights as transformers."""
    runs = [run(_subclass(library.Trainer, mixin), model, RegressionDataset(), tmp_path,
                gradient_accumulation_steps=accumulate, **REG) for library in (transformers, hf_lightning)]
    hf, ours = runs
    assert ours.trainer.drawn == hf.trainer.drawn
    windows = [(3, 3), (3, 3), (2, 2)] if accumulate == 3 else [(1, 1)] * 8
    assert [call[:2] for call in ours.trainer.drawn] == windows * 2
    assert_same(hf, ours, rtol=1e-6)


def test_an_overridden_get_batch_samples_returning_too_few_batches_is_an_error(tmp_path):
    class TooFew(OwnWindowCount):
        def get_batch_samples(self, epoch_iterator, num_batches, device):
            batches, count = super().get_batch_samples(epoch_iterator, num_batches, device)
            return batches[:1], count

    with pytest.raises(ValueError, match=r"get_batch_samples returned 1 batches where 3 were asked for, before the "
                                         r"end of the epoch \(1 of 8 batches\)"):
        run(_subclass(hf_lightning.Trainer, TooFew), RegressionModel, RegressionDataset(), tmp_path,
            gradient_accumulation_steps=3, **REG)


class EvaluateMidway(transformers.TrainerCallback):
    """Calls ``trainer.evaluate`` (its own prefix and ignored keys) or ``trainer.predict`` at step 2 of training, and
    records the steps ``on_pre_optimizer_step`` comes at."""

    def __init__(self, call: str) -> None:
        self.call, self.trainer, self.pre_optimizer = call, None, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.pre_optimizer.append(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2 and self.call == "evaluate":
            self.trainer.evaluate(metric_key_prefix="mid", ignore_keys=["unused"])
        elif state.global_step == 2 and self.call == "predict":
            self.trainer.predict(RegressionDataset(length=4, seed=5))


class HandsItselfOver:
    """Gives `EvaluateMidway` the trainer it is built with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, (EvaluateMidway, PredictAfterFirstSet)):
                callback.trainer = self


class PassThroughEvaluate:
    """transformers' question-answering pattern: ``evaluate`` overridden, calling ``super()``."""

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)


@pytest.mark.parametrize("call", ["evaluate", "predict", "override"])
def test_an_evaluation_inside_train_leaves_training_as_in_transformers(tmp_path, call):
    """An evaluate() / predict() called by a callback, or an overridden evaluate run at each evaluation, inside
    train(): every later step still calls on_pre_optimizer_step and counts its input tokens, and the in-training
    evaluations keep the eval prefix (the one the best model is chosen by); the same records as transformers."""
    runs = []
    for library in (transformers, hf_lightning):
        callback = EvaluateMidway(call)
        cls = _subclass(library.Trainer, HandsItselfOver, *([PassThroughEvaluate] if call == "override" else []))
        runs.append(run(cls, RegressionModel, RegressionDataset(length=24), tmp_path / library.__name__,
                        eval_dataset=RegressionDataset(length=5, seed=2), trainer_kwargs={"callbacks": [callback]},
                        eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                        load_best_model_at_end=True, metric_for_best_model="loss", include_num_input_tokens_seen=True,
                        per_device_train_batch_size=4, num_train_epochs=1, learning_rate=0.05))
        runs[-1].pre_optimizer = callback.pre_optimizer
    hf, ours = runs
    assert ours.pre_optimizer == hf.pre_optimizer == list(range(6))
    assert ours.trainer.state.num_input_tokens_seen == hf.trainer.state.num_input_tokens_seen == 24
    assert_same(hf, ours, rtol=1e-6)


class PredictAfterFirstSet(transformers.TrainerCallback):
    """Predicts once, when the first set of a dict of eval sets has been evaluated (the second is still to come)."""

    def __init__(self) -> None:
        self.trainer, self.done = None, False

    def on_evaluate(self, args, state, control, **kwargs):
        if not self.done:
            self.done = True
            module = getattr(self.trainer, "module", None)  # hf_lightning's training module
            self.trainer.predict(RegressionDataset(length=4, seed=5))
            self.same_module = getattr(self.trainer, "module", None) is module


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "torch_compile"])
def test_a_prediction_between_two_eval_sets_inside_train_leaves_the_evaluation_as_in_transformers(tmp_path,
                                                                                                 compiled):
    """A callback's predict() between the sets of a dict of eval sets evaluated during train(): the second set is
    still evaluated, logged and passed to on_evaluate, and the best model is chosen from both; with torch_compile the
    trainer's module (its compiled model) is the one training goes on with."""
    runs = []
    for library in (transformers, hf_lightning):
        callback = PredictAfterFirstSet()
        compile_args = {"torch_compile": True, "torch_compile_backend": "eager"} if compiled else {}
        runs.append(run(_subclass(library.Trainer, HandsItselfOver), RegressionModel, RegressionDataset(length=24),
                        tmp_path / library.__name__, trainer_kwargs={"callbacks": [callback]},
                        eval_dataset={"a": RegressionDataset(length=5, seed=2), "b": RegressionDataset(length=6,
                                                                                                       seed=3)},
                        eval_strategy="epoch", per_device_train_batch_size=4, num_train_epochs=2, learning_rate=0.05,
                        **compile_args))
        assert callback.same_module
    hf, ours = runs
    keys = [[k for k in r if k.startswith("eval_") and k.endswith("_loss")] for r in strip_speed(hf.log_history)]
    assert [k for k in keys if k] == [["eval_a_loss"], ["eval_b_loss"]] * 2
    assert_same(hf, ours, rtol=1e-5 if compiled else 1e-6)
