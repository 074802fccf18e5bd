"""Checkpoint parity: transformers.Trainer and lightning.Trainer + HFModule + HFFlow + HFCheckpoint, side by side.

Same TrainingArguments, model init, seed and data in the same test: the ``checkpoint-*`` folders (names and files),
``trainer_state.json`` (runtimes excepted), the folders left by rotation after every save, the best checkpoint, the
early-stopping step, and resuming across the two libraries in both directions.
"""

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
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from hf_lightning import HFDataModule, HFModule, OptimizerSettings
from hf_lightning.callbacks.checkpoint import HFCheckpoint
from hf_lightning.callbacks.early_stopping import HFEarlyStopping
from hf_lightning.callbacks.hf_flow import HFFlow
from hf_lightning.data.builtin import resolve_model_path
from tests.helpers.tiny import TINY_BERT, RegressionDataset, StrictRegressionModel, tiny_text_dataset

SPEED = ("_runtime", "_per_second")
TRAIN, EVAL = RegressionDataset(length=36), RegressionDataset(length=20, seed=1)


class FolderLog(TrainerCallback):
    """The checkpoint folders present after each ``on_save`` (i.e. after rotation)."""

    def __init__(self) -> None:
        self.after_save: list[tuple[int, list[str]]] = []

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        found = sorted(p.name for p in Path(args.output_dir).glob("checkpoint-*"))
        self.after_save.append((state.global_step, found))


def make_args(out: Path, **cfg: Any) -> TrainingArguments:
    base = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "num_train_epochs": 2,
            "learning_rate": 0.1, "per_device_eval_batch_size": 8, "logging_steps": 1, "report_to": [],
            "use_cpu": True, "disable_tqdm": True, "eval_strategy": "steps", "eval_steps": 2, "save_steps": 2}
    return TrainingArguments(str(out), **{**base, **cfg})


def run_hf(args: TrainingArguments, callbacks: tuple = (), resume: str | bool | None = None) -> Trainer:
    set_seed(args.seed)
    trainer = Trainer(model=StrictRegressionModel(), args=args, train_dataset=TRAIN, eval_dataset=EVAL,
                      callbacks=list(callbacks))
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def run_ours(args: TrainingArguments, callbacks: tuple = (), resume: str | bool | None = None,
             extra: tuple = ()) -> tuple[HFModule, HFFlow]:
    set_seed(args.seed)
    module = HFModule(model=StrictRegressionModel(), optimization=OptimizerSettings(learning_rate=args.learning_rate))
    data = HFDataModule(dataset={"train": TRAIN, "validation": EVAL}, batch_size=args.per_device_train_batch_size,
                        eval_batch_size=args.per_device_eval_batch_size, collator="default", validation_size=0,
                        test_size=0)
    flow = HFFlow(args=args, callbacks=list(callbacks))
    trainer = L.Trainer(max_epochs=math.ceil(args.num_train_epochs), max_steps=args.max_steps,
                        accumulate_grad_batches=args.gradient_accumulation_steps,
                        callbacks=[flow, HFCheckpoint(resume_from_checkpoint=resume), *extra], logger=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, use_distributed_sampler=False,
                        enable_model_summary=False)
    trainer.fit(module, data)
    return module, flow


def weights(model: torch.nn.Module) -> dict[str, float]:
    return {k: float(v) for k, v in model.state_dict().items()}


def assert_close(want: Any, got: Any, path: str = "", rtol: float = 1e-5) -> None:
    """Nested equality; floats to ``rtol`` (the logged losses are float32 sums)."""
    if isinstance(want, dict):
        assert set(want) == set(got), f"{path}: keys {sorted(want)} != {sorted(got)}"
        for key in want:
            assert_close(want[key], got[key], f"{path}.{key}", rtol)
    elif isinstance(want, list):
        assert len(want) == len(got), f"{path}: {len(want)} != {len(got)} items"
        for i, (a, b) in enumerate(zip(want, got)):
            assert_close(a, b, f"{path}[{i}]", rtol)
    elif isinstance(want, float) and isinstance(got, float):
        assert math.isclose(want, got, rel_tol=rtol, abs_tol=1e-9), f"{path}: {want} != {got}"
    else:
        assert want == got, f"{path}: {want!r} != {got!r}"


def trainer_state(folder: Path) -> dict[str, Any]:
    state = json.loads((folder / "trainer_state.json").read_text())
    state["log_history"] = [{k: v for k, v in r.items() if not k.endswith(SPEED)} for r in state["log_history"]]
    if state["best_model_checkpoint"]:
        state["best_model_checkpoint"] = os.path.basename(state["best_model_checkpoint"])
    return state


def listing(root: Path) -> dict[str, list[str]]:
    return {d.name: sorted(f.name for f in d.iterdir()) for d in sorted(root.glob("checkpoint-*"))}


def test_folders_and_trainer_state_match(tmp_path: Path) -> None:
    cfg = {"metric_for_best_model": "loss", "save_steps": 3, "eval_steps": 3}
    hf = run_hf(make_args(tmp_path / "hf", **cfg))
    module, _flow = run_ours(make_args(tmp_path / "ours", **cfg))
    assert_close(weights(hf.model), weights(module.model), rtol=1e-6)
    theirs, ours = listing(tmp_path / "hf"), listing(tmp_path / "ours")
    assert list(theirs) == list(ours) == ["checkpoint-10", "checkpoint-3", "checkpoint-6", "checkpoint-9"]
    for name, files in theirs.items():
        assert ours[name] == sorted([*files, "training_args.json"])  # plus the readable copy of the arguments
        assert_close(trainer_state(tmp_path / "hf" / name), trainer_state(tmp_path / "ours" / name))
        readable = json.loads((tmp_path / "ours" / name / "training_args.json").read_text())
        assert readable["save_steps"] == 3 and readable["output_dir"] == str(tmp_path / "ours")
    state = trainer_state(tmp_path / "ours" / "checkpoint-10")
    assert set(state["stateful_callbacks"]) == {"TrainerControl"}
    assert state["stateful_callbacks"]["TrainerControl"]["args"]["should_save"] is True


def test_pretrained_model_folder_matches(tmp_path: Path) -> None:
    """A PreTrainedModel with a tokenizer: config.json, model.safetensors and the tokenizer files, as transformers."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    raw = tiny_text_dataset(16)
    encoded = raw.map(lambda b: tokenizer(b["text"]), batched=True).rename_column("label", "labels")
    spec = dict(TINY_BERT)
    config = AutoConfig.for_model(spec.pop("model_type"), num_labels=2, **spec)
    args = {"per_device_train_batch_size": 8, "max_steps": 2, "save_steps": 2, "report_to": [], "use_cpu": True,
                "disable_tqdm": True}
    set_seed(0)
    Trainer(model=AutoModelForSequenceClassification.from_config(config),
            args=TrainingArguments(str(tmp_path / "hf"), **args), train_dataset=encoded.remove_columns(["text"]),
            processing_class=tokenizer).train()
    set_seed(0)
    module = HFModule(model=AutoModelForSequenceClassification.from_config(config), tokenizer=tokenizer)
    data = HFDataModule(dataset={"train": raw}, tokenizer=tokenizer, batch_size=8, validation_size=0, test_size=0)
    flow = HFFlow(args=TrainingArguments(str(tmp_path / "ours"), **args))
    L.Trainer(max_steps=2, callbacks=[flow, HFCheckpoint()], logger=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, use_distributed_sampler=False).fit(module, data)
    theirs, ours = listing(tmp_path / "hf"), listing(tmp_path / "ours")
    assert list(theirs) == list(ours) == ["checkpoint-2"]
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= set(theirs["checkpoint-2"])
    assert ours["checkpoint-2"] == sorted([*theirs["checkpoint-2"], "training_args.json"])
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ours" / "checkpoint-2")
    torch.testing.assert_close(reloaded.classifier.weight, module.model.classifier.weight)


ROTATION = {
    # save_total_limit, extra arguments: newest and best are kept; the best may be older than the newest.
    "limit2-best-is-newest": (2, {"metric_for_best_model": "loss"}),
    "limit2-best-older": (2, {"metric_for_best_model": "loss", "greater_is_better": True}),
    "limit1-best-older-load-best": (1, {"load_best_model_at_end": True, "greater_is_better": True}),
    "limit1-best-is-newest-load-best": (1, {"load_best_model_at_end": True}),
    "limit1-no-metric": (1, {}),
    "save-best-only": (None, {"save_strategy": "best", "metric_for_best_model": "loss", "greater_is_better": True}),
    "save-best-limit1-load-best": (1, {"save_strategy": "best", "metric_for_best_model": "loss",
                                           "load_best_model_at_end": True}),
}


@pytest.mark.parametrize("case", sorted(ROTATION))
def test_rotation_and_best_model(tmp_path: Path, case: str) -> None:
    limit, cfg = ROTATION[case]
    hf_log, our_log = FolderLog(), FolderLog()
    hf = run_hf(make_args(tmp_path / "hf", save_total_limit=limit, **cfg), callbacks=(hf_log,))
    module, flow = run_ours(make_args(tmp_path / "ours", save_total_limit=limit, **cfg), callbacks=(our_log,))
    assert our_log.after_save == hf_log.after_save  # the folders left after every save, rotation included
    assert sorted(listing(tmp_path / "ours")) == sorted(listing(tmp_path / "hf"))  # and at the very end
    best = hf.state.best_model_checkpoint
    assert (flow.state.best_model_checkpoint is None) == (best is None)
    if best is not None:
        assert os.path.basename(flow.state.best_model_checkpoint) == os.path.basename(best)
        assert flow.state.best_global_step == hf.state.best_global_step
    assert_close(weights(hf.model), weights(module.model), rtol=1e-6)  # the best weights when load_best_model_at_end


def test_early_stopping_stops_at_the_same_step(tmp_path: Path) -> None:
    # eval_loss falls every evaluation; with greater_is_better it never "improves" after the first one.
    cfg = {"metric_for_best_model": "loss", "greater_is_better": True, "num_train_epochs": 4, "eval_steps": 2,
           "save_steps": 2}
    hf = run_hf(make_args(tmp_path / "hf", **cfg), callbacks=(EarlyStoppingCallback(2),))
    module, flow = run_ours(make_args(tmp_path / "ours", **cfg), extra=(HFEarlyStopping(2),))
    assert hf.state.global_step == flow.state.global_step == 6  # evaluations at 2 (best), 4 (1), 6 (2 -> stop)
    assert_close(trainer_state(tmp_path / "hf" / "checkpoint-6"), trainer_state(tmp_path / "ours" / "checkpoint-6"))
    saved = trainer_state(tmp_path / "ours" / "checkpoint-4")["stateful_callbacks"]["EarlyStoppingCallback"]
    assert saved == {"args": {"early_stopping_patience": 2, "early_stopping_threshold": 0.0},
                     "attributes": {"early_stopping_patience_counter": 1}}
    assert_close(weights(hf.model), weights(module.model), rtol=1e-6)


@pytest.mark.parametrize("step", [3, 5, 7])  # inside epoch 0, at the epoch end, inside epoch 1 (5 steps / epoch)
def test_resume_across_libraries(tmp_path: Path, step: int) -> None:
    """Each library resumes from the other's checkpoint folder and ends where an uninterrupted run ends."""
    cfg = {"save_steps": 1, "eval_steps": 3}
    hf_full = run_hf(make_args(tmp_path / "hf", **cfg))
    module, _ = run_ours(make_args(tmp_path / "ours", **cfg))
    assert_close(weights(hf_full.model), weights(module.model), rtol=1e-6)
    for src, dst in (("hf", "ours-from-hf"), ("ours", "hf-from-ours")):
        shutil.copytree(tmp_path / src / f"checkpoint-{step}", tmp_path / dst / f"checkpoint-{step}")
    resumed, flow = run_ours(make_args(tmp_path / "ours-from-hf", **cfg), resume=True)
    assert flow.state.global_step == hf_full.state.global_step
    assert_close(weights(hf_full.model), weights(resumed.model), rtol=1e-6)
    hf_resumed = run_hf(make_args(tmp_path / "hf-from-ours", **cfg), resume=True)
    assert_close(weights(hf_full.model), weights(hf_resumed.model), rtol=1e-6)
    final = f"checkpoint-{hf_full.state.global_step}"
    assert_close(trainer_state(tmp_path / "hf" / final), trainer_state(tmp_path / "ours-from-hf" / final))


def test_ignore_data_skip_resume_matches(tmp_path: Path) -> None:
    """ignore_data_skip: both restart the interrupted epoch from its first batch (and stop at max_steps)."""
    cfg = {"save_steps": 1, "eval_steps": 3, "ignore_data_skip": True}
    run_hf(make_args(tmp_path / "hf", **cfg))
    for dst in ("hf-resumed", "ours-resumed"):
        shutil.copytree(tmp_path / "hf" / "checkpoint-7", tmp_path / dst / "checkpoint-7")
    hf = run_hf(make_args(tmp_path / "hf-resumed", **cfg), resume=True)
    module, flow = run_ours(make_args(tmp_path / "ours-resumed", **cfg), resume=True)
    assert flow.state.global_step == hf.state.global_step == 10
    assert_close(weights(hf.model), weights(module.model), rtol=1e-6)
    assert_close(trainer_state(tmp_path / "hf-resumed" / "checkpoint-10"),
                 trainer_state(tmp_path / "ours-resumed" / "checkpoint-10"))


@pytest.mark.parametrize("changed", [
    {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4},  # the same effective batch
    {"gradient_accumulation_steps": 1},
    {"per_device_train_batch_size": 3},
])
def test_resume_with_another_batch_size_or_accumulation_matches(tmp_path: Path, changed: dict[str, int],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint resumed with another per-device batch size or accumulation: transformers warns about the batch
    size and places the run with the new arithmetic (epochs and batches already seen); hf_lightning does the same."""
    cfg = {"save_steps": 3, "eval_steps": 3}
    run_hf(make_args(tmp_path / "hf", **cfg))
    for dst in ("hf-resumed", "ours-resumed"):
        shutil.copytree(tmp_path / "hf" / "checkpoint-3", tmp_path / dst / "checkpoint-3")
    hf = run_hf(make_args(tmp_path / "hf-resumed", **cfg, **changed), resume=True)
    with caplog.at_level("WARNING", logger="transformers"):
        module, flow = run_ours(make_args(tmp_path / "ours-resumed", **cfg, **changed), resume=True)
    assert flow.state.global_step == hf.state.global_step
    assert_close(weights(hf.model), weights(module.model), rtol=1e-6)
    final = f"checkpoint-{hf.state.global_step}"
    assert_close(trainer_state(tmp_path / "hf-resumed" / final), trainer_state(tmp_path / "ours-resumed" / final))
    if "per_device_train_batch_size" in changed:
        new = changed["per_device_train_batch_size"]
        assert f"per_device_train_batch_size: {new} (from args) != 4 (from trainer_state.json)" in caplog.text


def test_the_tokenizers_special_tokens_reach_the_model_config_as_in_transformers(tmp_path):
    """transformers' train() copies the processing class's pad / eos ids into the model's config (and generation
    config: ``align_special_tokens``): a GPT-2 classifier whose config has no pad id then trains on padded batches,
    and the checkpoint's config.json carries the ids."""
    import tokenizers
    import transformers
    from datasets import Dataset

    import hf_lightning

    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, **{f"w{i}": i for i in range(3, 64)}}
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]")),
        pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")
    ids = torch.randint(3, 64, (8, 6), generator=torch.Generator().manual_seed(0))
    ids[::2, 4:] = 0
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": (ids != 0).long().tolist(),
                              "labels": [0, 1] * 4})
    seen = {}
    for lib in (transformers, hf_lightning):
        torch.manual_seed(0)
        model = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(
            vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=16, num_labels=2))
        args = lib.TrainingArguments(str(tmp_path / lib.__name__), max_steps=2, save_steps=2,
                                     per_device_train_batch_size=4, report_to=[], disable_tqdm=True, use_cpu=True)
        result = lib.Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer).train()
        folder = tmp_path / lib.__name__ / "checkpoint-2"
        saved = json.loads((folder / "config.json").read_text())
        seen[lib] = (round(result.training_loss, 6), model.config.pad_token_id, model.config.eos_token_id,
                     saved["pad_token_id"], saved["eos_token_id"],
                     sorted(set(os.listdir(folder)) - {"training_args.json"}))  # hf_lightning's own, documented
    assert seen[transformers][1:5] == (0, 2, 0, 2)
    assert seen[hf_lightning] == seen[transformers]
