"""HFCheckpoint end to end on Lightning: exact resume, random streams, early-stopping state, safe loading, folders."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.precision import MixedPrecision
from transformers import TrainingArguments, set_seed

from hf_lightning import HFDataModule, HFModule, OptimizerSettings
from hf_lightning.callbacks.checkpoint import HFCheckpoint
from hf_lightning.callbacks.early_stopping import HFEarlyStopping
from hf_lightning.callbacks.hf_flow import HFFlow
from hf_lightning.checkpoint import folder
from hf_lightning.checkpoint.resume import resume_point
from tests.helpers.tiny import RegressionDataset, StrictRegressionModel

SPEED = ("_runtime", "_per_second")
TRAIN, EVAL = RegressionDataset(length=36), RegressionDataset(length=20, seed=1)


def make_args(out: Path, **cfg: Any) -> TrainingArguments:
    base = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "num_train_epochs": 2,
            "learning_rate": 0.1, "per_device_eval_batch_size": 8, "logging_steps": 1, "report_to": [],
            "use_cpu": True, "disable_tqdm": True, "eval_strategy": "steps", "eval_steps": 3, "save_steps": 1}
    return TrainingArguments(str(out), **{**base, **cfg})


def fit(args: TrainingArguments, checkpoint: HFCheckpoint | None = None, extra: tuple = (), model: Any = None,
        data: Any = None, ckpt_path: str | None = None, plugins: Any = None) -> tuple[HFModule, HFFlow, L.Trainer]:
    """lightning.Trainer + HFModule + HFDataModule + HFFlow(args) + HFCheckpoint on the regression task."""
    set_seed(args.seed)
    module = HFModule(model=model() if model else StrictRegressionModel(),
                      optimization=OptimizerSettings(learning_rate=args.learning_rate))
    data = data or HFDataModule(dataset={"train": TRAIN, "validation": EVAL}, eval_batch_size=8, collator="default",
                                batch_size=args.per_device_train_batch_size, validation_size=0, test_size=0)
    flow = HFFlow(args=args)
    trainer = L.Trainer(max_epochs=math.ceil(args.num_train_epochs) if args.max_steps < 0 else -1,
                        max_steps=args.max_steps, accumulate_grad_batches=args.gradient_accumulation_steps,
                        callbacks=[flow, checkpoint or HFCheckpoint(), *extra], logger=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, use_distributed_sampler=False, enable_model_summary=False,
                        default_root_dir=str(args.output_dir), plugins=plugins)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, flow, trainer


def clone(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor], atol: float = 1e-7) -> None:
    assert set(want) == set(got)
    worst = max(float((want[k].double() - got[k].double()).abs().max()) for k in want)
    assert worst <= atol, f"weights differ by {worst:.3e}"


def history(flow: HFFlow) -> list[dict[str, Any]]:
    """log_history without runtimes and without the run summary (train_loss covers each run's own steps)."""
    return [{k: v for k, v in r.items() if not k.endswith(SPEED)} for r in flow.state.log_history
            if "train_loss" not in r]


def copy_checkpoint(src: Path, step: int, dst: Path) -> None:
    shutil.copytree(src / f"checkpoint-{step}", dst / f"checkpoint-{step}")


# ------------------------------------------------------------------------------------------------------ exact resume
RESUMES = {
    # name: (arguments, checkpoints to resume from). 36 samples / 4 = 9 batches: a short last window with GA 2.
    "ga2-epochs": ({}, [3, 5, 6, 9]),  # 5 steps per epoch: inside epoch 0, its end, inside epoch 1, last window
    "ga1-epochs": ({"gradient_accumulation_steps": 1}, [4, 9, 13]),
    "ga2-max-steps": ({"max_steps": 13}, [5, 7, 11]),  # iteration-based: 2.6 epochs
}


@pytest.mark.parametrize("case", sorted(RESUMES))
def test_resume_matches_uninterrupted_run(tmp_path: Path, case: str) -> None:
    cfg, steps = RESUMES[case]
    module, flow, _ = fit(make_args(tmp_path / "full", **cfg))
    want, want_logs = clone(module.model), history(flow)
    for step in steps:
        out = tmp_path / f"from-{step}"
        copy_checkpoint(tmp_path / "full", step, out)
        resumed, resumed_flow, trainer = fit(make_args(out, **cfg), HFCheckpoint(resume_from_checkpoint=True))
        assert_same_weights(want, clone(resumed.model))
        assert history(resumed_flow) == want_logs, f"log_history differs after resuming from step {step}"
        assert trainer.global_step == flow.state.global_step
        # the resumed run keeps saving: its folders equal the uninterrupted run's
        assert (out / f"checkpoint-{flow.state.global_step}" / "trainer_state.json").is_file()


def test_resume_point_is_transformers_arithmetic() -> None:
    # Trainer._init_training_state: epochs = gs // updates_per_epoch; skip (gs % updates_per_epoch) * GA batches.
    assert resume_point(7, num_batches=9, accumulate=2) == resume_point(7, 9.0, 2)
    point = resume_point(7, num_batches=9, accumulate=2)
    assert (point.epoch, point.batches, point.epoch_steps) == (1, 4, 2)
    assert resume_point(5, 9, 2).batches == 0 and resume_point(5, 9, 2).epoch == 1
    assert resume_point(7, 9, 2, ignore_data_skip=True).batches == 0
    assert resume_point(7, float("inf"), 2).batches == 14


class DropoutRegression(StrictRegressionModel):
    """The regression model with dropout on its input: every training step draws random numbers."""

    def forward(self, input_x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple:
        return super().forward(torch.nn.functional.dropout(input_x, p=0.3, training=self.training), labels)


def test_resume_restores_random_streams(tmp_path: Path) -> None:
    """Only restored generators (rng_state.pth) give the weights of the uninterrupted run."""
    module, _, _ = fit(make_args(tmp_path / "full"), model=DropoutRegression)
    want = clone(module.model)
    for step in (3, 5, 6):  # inside epoch 0 (5 steps per epoch), at its end, inside epoch 1
        out = tmp_path / f"from-{step}"
        copy_checkpoint(tmp_path / "full", step, out)
        resumed, _, _ = fit(make_args(out), HFCheckpoint(resume_from_checkpoint=True), model=DropoutRegression)
        assert_same_weights(want, clone(resumed.model), atol=0.0)
    out = tmp_path / "no-rng"
    copy_checkpoint(tmp_path / "full", 3, out)
    (out / "checkpoint-3" / "rng_state.pth").unlink()
    resumed, _, _ = fit(make_args(out), HFCheckpoint(resume_from_checkpoint=True), model=DropoutRegression)
    with pytest.raises(AssertionError, match="weights differ"):
        assert_same_weights(want, clone(resumed.model), atol=1e-6)


def test_fp16_scaler_is_saved_and_restored(tmp_path: Path) -> None:
    """fp16 mixed precision writes scaler.pt (transformers' name); resuming restores the loss scale and its tracker."""
    def fp16() -> MixedPrecision:
        return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))

    module, _, trainer = fit(make_args(tmp_path / "full"), plugins=[fp16()])
    assert (tmp_path / "full" / "checkpoint-4" / "scaler.pt").is_file()
    copy_checkpoint(tmp_path / "full", 4, tmp_path / "resumed")
    resumed, _, resumed_trainer = fit(make_args(tmp_path / "resumed"), HFCheckpoint(resume_from_checkpoint=True),
                                      plugins=[fp16()])
    assert_same_weights(clone(module.model), clone(resumed.model))
    assert resumed_trainer.precision_plugin.scaler.state_dict() == trainer.precision_plugin.scaler.state_dict()


def test_lightning_ckpt_resume_inside_an_epoch(tmp_path: Path) -> None:
    """Lightning's own .ckpt still works with HFCheckpoint present, and skips the batches already seen."""
    args = make_args(tmp_path, save_strategy="no")
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1, filename="{step}")
    module, flow, _ = fit(args, extra=(saver,))
    want, want_logs = clone(module.model), history(flow)
    resumed, resumed_flow, _ = fit(make_args(tmp_path, save_strategy="no"),
                                   ckpt_path=str(tmp_path / "ckpt" / "step=3.ckpt"))
    assert_same_weights(want, clone(resumed.model))
    assert history(resumed_flow) == want_logs


def test_lightning_ckpt_saved_at_an_epoch_end_resumes(tmp_path: Path) -> None:
    """The .ckpt Lightning's default ModelCheckpoint writes at an epoch's end (HFFlow runs the evaluations, so
    Lightning validates none): the resumed fit starts the epoch events itself (it used to divide by zero) and
    reaches max_steps. Lightning 2.6 restarts from such a file with one extra batch of the next epoch before that
    epoch starts (plain Lightning does the same), so this resume is not step-for-step exact: docs/checkpoints.md
    says so and points to HF checkpoint folders, whose resume is."""
    args = make_args(tmp_path, save_strategy="no", gradient_accumulation_steps=1, max_steps=9)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}-{step}")
    fit(args, extra=(saver,))
    saved = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert [p.name for p in saved] == ["epoch=0-step=9.ckpt"]
    _, flow, trainer = fit(make_args(tmp_path, save_strategy="no", gradient_accumulation_steps=1, max_steps=14),
                           ckpt_path=str(saved[0]))
    assert trainer.global_step == flow.state.global_step == 14
    steps = [r["step"] for r in flow.state.log_history if "loss" in r]
    assert steps == list(range(1, 15))


def test_resume_and_lightning_ckpt_together_is_an_error(tmp_path: Path) -> None:
    args = make_args(tmp_path, max_steps=2)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, filename="last")
    fit(args, extra=(saver,))
    with pytest.raises(ValueError, match="resume from one of them"):
        fit(make_args(tmp_path, max_steps=3), HFCheckpoint(resume_from_checkpoint=True),
            ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))


# ------------------------------------------------------------------------------------------------------ early stopping
@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_counter_survives_resume(tmp_path: Path, restore: bool) -> None:
    # eval_loss falls at every evaluation; with greater_is_better it never improves after the first one.
    cfg = {"metric_for_best_model": "loss", "greater_is_better": True, "num_train_epochs": 4, "eval_steps": 2,
           "save_steps": 2, "restore_callback_states_from_checkpoint": restore}
    _, flow, _ = fit(make_args(tmp_path / "full", **cfg), extra=(HFEarlyStopping(3),))
    assert flow.state.global_step == 8  # evaluations at 2 (best), 4, 6, 8 (third without improvement -> stop)
    state = json.loads((tmp_path / "full" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["EarlyStoppingCallback"]["attributes"] == {"early_stopping_patience_counter": 2}
    copy_checkpoint(tmp_path / "full", 6, tmp_path / "resumed")
    stopper = HFEarlyStopping(3)
    _, resumed, _ = fit(make_args(tmp_path / "resumed", **cfg), HFCheckpoint(resume_from_checkpoint=True),
                        extra=(stopper,))
    # transformers restores the counter only with restore_callback_states_from_checkpoint (default False)
    assert resumed.state.global_step == (8 if restore else 12)
    assert stopper.counter == 3


def test_early_stopping_counter_in_lightning_ckpt(tmp_path: Path) -> None:
    cfg = {"metric_for_best_model": "loss", "greater_is_better": True, "num_train_epochs": 4, "eval_steps": 2,
           "save_strategy": "no"}
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1, filename="{step}")
    fit(make_args(tmp_path, **cfg), extra=(HFEarlyStopping(3), saver))
    stopper = HFEarlyStopping(3)
    _, resumed, _ = fit(make_args(tmp_path, **cfg), extra=(stopper,), ckpt_path=str(tmp_path / "ckpt" / "step=6.ckpt"))
    assert resumed.state.global_step == 8 and stopper.counter == 3  # the counter (2 at step 6) came back


def test_early_stopping_needs_a_metric(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metric_for_best_model"):
        fit(make_args(tmp_path, max_steps=2), extra=(HFEarlyStopping(2),))


# ------------------------------------------------------------------------------------------------------ safe loading
class _WritesMarker:
    """Unpickling this object calls ``open(marker, 'w')``: code execution from a checkpoint file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_malicious_pickle_is_never_executed(tmp_path: Path, name: str) -> None:
    fit(make_args(tmp_path / "run", max_steps=2, save_steps=2))
    checkpoint = tmp_path / "run" / "checkpoint-2"
    marker = tmp_path / "pwned"
    torch.save(_WritesMarker(marker), checkpoint / name)
    torch.load(checkpoint / name, weights_only=False)  # proof that the payload runs when unpickled
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ValueError, match=f"Refusing to load .*{name}"):
        fit(make_args(tmp_path / "run", max_steps=4, save_steps=2),
            HFCheckpoint(resume_from_checkpoint=str(checkpoint)))
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------------ folders
def test_resolve_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"No valid checkpoint found in output directory \(.*\)"):
        folder.resolve_checkpoint(str(tmp_path), True)
    with pytest.raises(ValueError, match="Can't find a valid checkpoint at"):
        folder.resolve_checkpoint(str(tmp_path / "nowhere"), str(tmp_path / "nowhere"))
    assert folder.resolve_checkpoint(str(tmp_path), None) is None
    assert folder.resolve_checkpoint(str(tmp_path), False) is None
    fit(make_args(tmp_path, max_steps=4, save_steps=2))
    newest = str(tmp_path / "checkpoint-4")
    assert folder.resolve_checkpoint(str(tmp_path), True) == newest
    shutil.copytree(newest, tmp_path / ".tmp-checkpoint-6")  # a staging folder a crash left behind: never chosen
    os.makedirs(tmp_path / "checkpoint-8")  # an incomplete folder (e.g. transformers.Trainer killed while saving)
    (tmp_path / "checkpoint-8" / "model.safetensors").write_bytes(b"")
    assert folder.resolve_checkpoint(str(tmp_path), True) == newest


def test_publish_replaces_and_recover_cleans(tmp_path: Path) -> None:
    final = tmp_path / "checkpoint-3"
    for content in ("old", "new"):
        staging = Path(folder.start_staging(str(final)))
        (staging / "f.txt").write_text(content)
        folder.publish(str(staging), str(final))
    assert (final / "f.txt").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["checkpoint-3"]
    # a crash between the two renames of a replacement: the old folder is put back, staging folders removed
    os.rename(final, tmp_path / ".old-checkpoint-3")
    os.makedirs(tmp_path / ".tmp-checkpoint-5")
    folder.recover_output_dir(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-3"]


def test_a_rotation_cut_short_leaves_no_partial_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """Rotation renames a folder out of the way before deleting it: a crash in the middle of the deletion leaves the
    checkpoint complete or absent (never a folder that looks resumable but lacks files); the next run cleans up."""
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
        for name in ("model.safetensors", "trainer_state.json", "optimizer.pt"):
            (tmp_path / f"checkpoint-{step}" / name).write_text(name)
        os.utime(tmp_path / f"checkpoint-{step}", (step, step))
    removing = shutil.rmtree

    def killed_midway(path, ignore_errors=False):  # one file deleted, then the process dies
        if os.path.isdir(path):
            os.remove(os.path.join(path, min(os.listdir(path))))
            raise KeyboardInterrupt
        return removing(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(folder.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        folder.rotate(str(tmp_path), 1, None)
    monkeypatch.setattr(folder.shutil, "rmtree", removing)
    assert sorted(os.listdir(tmp_path)) == [".deleted-checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert all(len(os.listdir(tmp_path / f"checkpoint-{s}")) == 3 for s in (4, 6))
    folder.recover_output_dir(str(tmp_path))
    folder.rotate(str(tmp_path), 1, None)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-6"]


def test_folder_contents_and_save_only_model(tmp_path: Path) -> None:
    module, _flow, _ = fit(make_args(tmp_path / "full", max_steps=2, save_steps=2))
    files = sorted(os.listdir(tmp_path / "full" / "checkpoint-2"))
    assert files == ["model.safetensors", "optimizer.pt", "rng_state.pth", "scheduler.pt", "trainer_state.json",
                     "training_args.bin", "training_args.json"]
    assert_same_weights(clone(module.model), folder.load_weights(str(tmp_path / "full" / "checkpoint-2")))
    fit(make_args(tmp_path / "light", max_steps=2, save_steps=2, save_only_model=True))
    assert sorted(os.listdir(tmp_path / "light" / "checkpoint-2")) == [
        "model.safetensors", "trainer_state.json", "training_args.bin", "training_args.json"]
    _, resumed, _ = fit(make_args(tmp_path / "light", max_steps=4, save_steps=2, save_only_model=True),
                        HFCheckpoint(resume_from_checkpoint=True))  # fresh optimizer, as transformers does
    assert resumed.state.global_step == 4


# ------------------------------------------------------------------------------------------------------ settings
def test_settings_go_into_the_flow_arguments(tmp_path: Path) -> None:
    checkpoint = HFCheckpoint(output_dir=str(tmp_path / "elsewhere"), save_steps=3, save_total_limit=1,
                              load_best_model_at_end=True)
    _, flow, _ = fit(make_args(tmp_path, save_steps=1), checkpoint)
    assert flow.args.save_steps == 3 and flow.args.metric_for_best_model == "loss"  # TrainingArguments' default
    assert flow.args.greater_is_better is False
    assert sorted(os.listdir(tmp_path / "elsewhere")) == [f"checkpoint-{flow.state.best_global_step}"]
    with pytest.raises(ValueError, match="round multiple of the evaluation steps"):
        fit(make_args(tmp_path), HFCheckpoint(save_steps=2, load_best_model_at_end=True))
    with pytest.raises(ValueError, match="set it in one place"):
        fit(make_args(tmp_path, metric_for_best_model="loss"), HFCheckpoint(metric_for_best_model="accuracy"))


def test_needs_hf_flow(tmp_path: Path) -> None:
    class Plain(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.layer(batch[0]).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=2)
    trainer = L.Trainer(max_steps=1, callbacks=[HFCheckpoint()], logger=False, enable_progress_bar=False,
                        default_root_dir=str(tmp_path))
    with pytest.raises(ValueError, match="needs an HFFlow callback"):
        trainer.fit(Plain(), data)


# ------------------------------------------------------------------------------------------------------ yaml door
def test_checkpointing_recipe_stacks_and_resumes(tmp_path: Path) -> None:
    """configs/checkpointing.yaml on top of a tiny recipe: checkpoints, early stopping, then a resumed fit."""
    from hf_lightning.cli import main

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "checkpoints"

    def run(*extra: str) -> Any:
        return main(["fit", "--config", str(root / "tests/assets/tiny_cli.yaml"),
                     "--config", str(root / "configs/checkpointing.yaml"), "--trainer.enable_checkpointing", "true",
                     "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path), "--export_dir", "none",
                     "--trainer.callbacks.init_args.output_dir", str(out), *extra])

    first = run("--trainer.max_steps", "2")
    assert any(isinstance(cb, HFEarlyStopping) for cb in first.trainer.callbacks)
    assert sorted(os.listdir(out)) == ["checkpoint-2"]  # saved (and evaluated) at max_steps, as transformers
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(out / "checkpoint-2") and "eval_accuracy" in state["log_history"][-1]
    assert "EarlyStoppingCallback" in state["stateful_callbacks"]
    second = run("--trainer.max_steps", "3", "--trainer.callbacks.init_args.resume_from_checkpoint", "true")
    assert second.trainer.global_step == 3
    flow = next(cb for cb in second.trainer.callbacks if isinstance(cb, HFFlow))
    assert [r["step"] for r in flow.state.log_history if "eval_accuracy" in r] == [2, 3]
