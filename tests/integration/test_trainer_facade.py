"""The HF-style Trainer's surface: reporting, saving, callbacks management, legacy names, errors before training."""

from __future__ import annotations

import glob
import json
import os

import pytest
import torch
import transformers
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hf_lightning import Trainer, TrainingArguments
from tests.helpers.tiny import TINY_BERT, RegressionDataset, RegressionModel


def _args(tmp_path, **kwargs) -> TrainingArguments:
    base = dict(per_device_train_batch_size=8, max_steps=4, learning_rate=0.1, report_to=[], use_cpu=True,
                save_strategy="no", logging_steps=1, disable_tqdm=True)
    return TrainingArguments(str(tmp_path), **{**base, **kwargs})


def test_report_to_tensorboard_and_csv_write_hf_tags(tmp_path):
    trainer = Trainer(model=RegressionModel(), args=_args(tmp_path, report_to=["tensorboard", "csv"]),
                      train_dataset=RegressionDataset())
    trainer.train()
    events = glob.glob(str(tmp_path / "runs" / "**" / "events.out.tfevents.*"), recursive=True)
    assert events, "no TensorBoard event file under output_dir/runs"
    acc = EventAccumulator(os.path.dirname(events[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/epoch"} <= tags
    losses = [e.value for e in acc.Scalars("train/loss")]
    assert losses == pytest.approx([r["loss"] for r in trainer.state.log_history if "loss" in r], rel=1e-6)
    assert glob.glob(str(tmp_path / "logs" / "**" / "metrics.csv"), recursive=True)


def test_ctrl_c_raises_keyboard_interrupt_as_transformers_does(tmp_path):
    """Ctrl+C during train(): transformers lets the KeyboardInterrupt through (Lightning alone would exit the process
    and ignore SIGINT from then on); the state and weights are those of the last finished step, in both."""
    import signal

    class Interrupt(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt

    handler = signal.getsignal(signal.SIGINT)
    results = {}
    for name, cls in (("hf", transformers.Trainer), ("ours", Trainer)):
        torch.manual_seed(0)
        args = _args(tmp_path / name) if cls is Trainer else transformers.TrainingArguments(
            str(tmp_path / name), **{k: getattr(_args(tmp_path), k) for k in (
                "per_device_train_batch_size", "max_steps", "learning_rate", "report_to", "use_cpu",
                "save_strategy", "logging_steps", "disable_tqdm")})
        trainer = cls(model=RegressionModel(), args=args, train_dataset=RegressionDataset(), callbacks=[Interrupt()])
        with pytest.raises(KeyboardInterrupt):
            trainer.train()
        results[name] = (trainer.state.global_step, trainer.model.a.item(), trainer.model.b.item())
        assert signal.getsignal(signal.SIGINT) is handler  # Ctrl+C still interrupts afterwards
    assert results["ours"][0] == results["hf"][0] == 2
    assert results["ours"][1:] == pytest.approx(results["hf"][1:], abs=1e-6)


def test_disable_tqdm_prints_logs_as_transformers_does(tmp_path, capsys):
    Trainer(model=RegressionModel(), args=_args(tmp_path), train_dataset=RegressionDataset()).train()
    assert "'loss':" in capsys.readouterr().out  # transformers' PrinterCallback


def test_save_model_state_and_metrics(tmp_path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        __import__("hf_lightning").data.resolve_model_path("minilm"))
    model = transformers.AutoModelForSequenceClassification.from_config(
        transformers.AutoConfig.for_model(**TINY_BERT, num_labels=2))
    trainer = Trainer(model=model, args=_args(tmp_path), processing_class=tokenizer)
    trainer.save_model(str(tmp_path / "export"))
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "export")
    torch.testing.assert_close(loaded.classifier.weight, model.classifier.weight)
    assert (tmp_path / "export" / "tokenizer.json").exists() and (tmp_path / "export" / "training_args.bin").exists()
    trainer.save_state()
    assert json.loads((tmp_path / "trainer_state.json").read_text())["global_step"] == 0
    trainer.save_metrics("eval", {"eval_loss": 1.5})
    assert json.loads((tmp_path / "eval_results.json").read_text()) == {"eval_loss": 1.5}


def test_callback_management_mirrors_transformers(tmp_path):
    trainer = Trainer(model=RegressionModel(), args=_args(tmp_path))
    names = lambda: [type(c).__name__ for c in trainer.callback_handler.callbacks]
    assert "DefaultFlowCallback" in names() and "PrinterCallback" in names()
    trainer.add_callback(transformers.EarlyStoppingCallback)
    assert "EarlyStoppingCallback" in names()
    popped = trainer.pop_callback(transformers.EarlyStoppingCallback)
    assert isinstance(popped, transformers.EarlyStoppingCallback) and "EarlyStoppingCallback" not in names()
    trainer.remove_callback(transformers.PrinterCallback)
    assert "PrinterCallback" not in names()
    assert trainer.is_world_process_zero()


def test_legacy_tokenizer_argument_warns(tmp_path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        __import__("hf_lightning").data.resolve_model_path("minilm"))
    with pytest.warns(FutureWarning, match="processing_class"):
        trainer = Trainer(model=RegressionModel(), args=_args(tmp_path), tokenizer=tokenizer)
    assert trainer.processing_class is tokenizer


def test_errors_come_before_training(tmp_path):
    with pytest.raises(RuntimeError, match="model"):
        Trainer(args=_args(tmp_path))
    with pytest.raises(ValueError, match="push_to_hub"):
        Trainer(model=RegressionModel(), args=_args(tmp_path, push_to_hub=True))
    with pytest.raises(ValueError, match="train_dataset"):
        Trainer(model=RegressionModel(), args=_args(tmp_path)).train()
    assert not os.path.exists(tmp_path / "runs")


def test_accepts_a_transformers_training_arguments(tmp_path):
    hf_args = transformers.TrainingArguments(str(tmp_path), max_steps=2, report_to=[], use_cpu=True,
                                             save_strategy="no", per_device_train_batch_size=8)
    out = Trainer(model=RegressionModel(), args=hf_args, train_dataset=RegressionDataset()).train()
    assert out.global_step == 2 and out.training_loss > 0


def test_alternating_evaluate_and_predict_build_one_lightning_trainer_per_data_set_and_stage(tmp_path, monkeypatch):
    """evaluate() and predict() called in turn (and a dict of eval sets) re-use their evaluation set-up: a Lightning
    Trainer is built once per data set and stage, not per call; the results stay those of fresh set-ups."""
    evaluation, other = RegressionDataset(16, seed=1), RegressionDataset(12, seed=2)
    trainer = Trainer(model=RegressionModel(), args=_args(tmp_path), eval_dataset={"a": evaluation, "b": other})
    built = []
    original = Trainer._lightning_trainer
    monkeypatch.setattr(Trainer, "_lightning_trainer", lambda self, *a, **k: built.append(1) or original(self, *a, **k))
    first = trainer.evaluate(), trainer.predict(evaluation).predictions
    for _ in range(3):
        again = trainer.evaluate(), trainer.predict(evaluation).predictions
    assert len(built) == 3  # eval set a, eval set b, predict on a
    assert {k: v for k, v in again[0].items() if "runtime" not in k and "per_second" not in k} == {
        k: v for k, v in first[0].items() if "runtime" not in k and "per_second" not in k}
    assert (again[1] == first[1]).all() and set(first[0]) >= {"eval_a_loss", "eval_b_loss"}


def _tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    (run,) = {os.path.dirname(e) for e in glob.glob(str(folder / "runs" / "**" / "events.out.tfevents.*"),
                                                    recursive=True)}  # one run folder for training and evaluations
    acc = EventAccumulator(run)
    acc.Reload()
    # sorted: the run folder may hold several event files (a writer reopened after training), read in file order
    return {tag: sorted((e.step, e.value) for e in acc.Scalars(tag)) for tag in acc.Tags()["scalars"]}


def test_tensorboard_holds_what_transformers_writes_for_training_and_later_evaluations(tmp_path):
    """report_to="tensorboard", train() then evaluate() twice: the same tags (eval/loss, train/epoch, ... with HF's
    names, no Lightning extras), as many points each, at the same steps, in one run folder, as transformers."""
    runs = {}
    for lib in (transformers, __import__("hf_lightning")):
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), max_steps=4, report_to=["tensorboard"],
                                     use_cpu=True, save_strategy="no", logging_steps=2, disable_tqdm=True)
        trainer = lib.Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(),
                              eval_dataset=RegressionDataset(16, seed=1))
        trainer.train()
        trainer.evaluate()
        trainer.evaluate()
        runs[lib.__name__] = _tensorboard_scalars(tmp_path / lib.__name__)
    ours, theirs = runs["hf_lightning"], runs["transformers"]
    assert sorted(ours) == sorted(theirs) and "eval/loss" in ours
    for tag, points in theirs.items():
        assert [step for step, _ in ours[tag]] == [step for step, _ in points], tag
        if "runtime" not in tag and "per_second" not in tag and "flos" not in tag:
            assert [v for _, v in ours[tag]] == pytest.approx([v for _, v in points], rel=1e-5), tag


@pytest.mark.parametrize("cls", ["TrainingArguments", "Seq2SeqTrainingArguments"])
def test_training_args_bin_loads_where_only_transformers_is_installed(tmp_path, cls):
    """``training_args.bin`` in checkpoints and exports holds transformers' class with the run's values: a machine
    with transformers and no hf_lightning (an inference or hub host) reads it with ``torch.load``."""
    import subprocess
    import sys

    import hf_lightning

    args = getattr(hf_lightning, cls)(str(tmp_path), per_device_train_batch_size=8, max_steps=4, report_to=[],
                                      use_cpu=True, save_steps=4, logging_dir=str(tmp_path / "tb"))
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset())
    trainer.train()
    trainer.save_model(str(tmp_path / "export"))
    probe = (
        "import sys; sys.modules['hf_lightning'] = None\n"  # importing hf_lightning now fails
        "import torch, transformers\n"
        "for path in sys.argv[1:]:\n"
        "    args = torch.load(path, weights_only=False)\n"
        "    print(type(args).__module__, type(args).__name__, args.max_steps, args.save_steps, args.logging_dir)\n")
    files = [str(tmp_path / "checkpoint-4" / "training_args.bin"), str(tmp_path / "export" / "training_args.bin")]
    done = subprocess.run([sys.executable, "-c", probe, *files], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    module = "transformers.training_args" + ("_seq2seq" if "Seq" in cls else "")
    assert done.stdout.splitlines() == [f"{module} {cls} 4 4 {tmp_path / 'tb'}"] * 2
    # the run's own arguments keep hf_lightning's class
    assert type(trainer.args) is getattr(hf_lightning, cls)


def test_ctrl_c_during_a_save_leaves_no_staging_folder(tmp_path, monkeypatch):
    """Ctrl+C while a checkpoint is being written: the KeyboardInterrupt goes through and the half-written staging
    folder goes with it (the checkpoints already published stay)."""
    from hf_lightning.checkpoint import folder

    publish = folder.publish

    def interrupted(staging, final):
        if final.endswith("checkpoint-4"):
            raise KeyboardInterrupt
        publish(staging, final)

    monkeypatch.setattr(folder, "publish", interrupted)
    trainer = Trainer(model=RegressionModel(), args=_args(tmp_path, save_strategy="steps", save_steps=2),
                      train_dataset=RegressionDataset())
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2"]
    assert "model.safetensors" in os.listdir(tmp_path / "checkpoint-2")


def _event_folders(root) -> list[str]:
    return sorted({os.path.relpath(os.path.dirname(p), root)
                   for p in glob.glob(str(root / "**" / "events.out.tfevents.*"), recursive=True)})


def test_tensorboard_is_transformers_callback_so_remove_pop_and_an_own_writer_act_as_there(tmp_path):
    """report_to="tensorboard" is transformers' TensorBoardCallback in the handler, at transformers' place: removing
    it stops TensorBoard, popping returns it, and the "own writer" pattern (pop it, add one with tb_writer=...) writes
    once, to that writer's folder, in both libraries."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    seen = {}
    for lib in (transformers, __import__("hf_lightning")):
        root = tmp_path / lib.__name__
        names, folders = [], {}
        for case in ("kept", "removed", "own_writer"):
            args = lib.TrainingArguments(str(root / case), per_device_train_batch_size=8, max_steps=4, learning_rate=0.1,
                                         report_to=["tensorboard"],
                                         use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True)
            trainer = lib.Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset())
            names.append([type(c).__name__ for c in trainer.callback_handler.callbacks])
            if case == "removed":
                trainer.remove_callback(TensorBoardCallback)
            if case == "own_writer":
                popped = trainer.pop_callback(TensorBoardCallback)
                assert isinstance(popped, TensorBoardCallback)
                trainer.add_callback(TensorBoardCallback(tb_writer=SummaryWriter(str(root / case / "my_tb"))))
            trainer.train()
            folders[case] = [f.split(os.sep)[0] for f in _event_folders(root / case)]
        seen[lib.__name__] = (names, folders)
    assert seen["hf_lightning"] == seen["transformers"]
    assert seen["transformers"][1] == {"kept": ["runs"], "removed": [], "own_writer": ["my_tb"]}
    assert seen["transformers"][0][0] == ["DefaultFlowCallback", "TensorBoardCallback", "PrinterCallback"]
