"""python -m hf_lightning: fit / validate / predict, overrides, env vars, every shipped config, bad input."""

from __future__ import annotations

import copy
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
import yaml

from hf_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "tests/assets/tiny_cli.yaml")


def _run(tmp_path: Path, *args: str):
    return main([args[0], "--config", TINY, "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.logger.class_path", "lightning.pytorch.loggers.TensorBoardLogger",
                 "--trainer.logger.init_args.save_dir", str(tmp_path), *args[1:]])


def test_fit_logs_exports_and_reloads(tmp_path, capsys):
    export = tmp_path / "model"
    cli = _run(tmp_path, "fit", "--export_dir", str(export), "--trainer.max_steps", "3",
               "--model.optimization.learning_rate", "3e-3")
    assert cli.trainer.global_step == 3  # the dotted override won over the yaml's 4
    assert cli.model.optim_config["learning_rate"] == 3e-3
    assert cli.model.model.config.num_labels == 2  # linked from the data
    events = glob.glob(str(tmp_path / "**/events.out.tfevents.*"), recursive=True)
    assert events, "TensorBoard event file missing"
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(export)
    torch.testing.assert_close(loaded.classifier.weight, cli.model.model.classifier.weight)
    assert (export / "tokenizer.json").exists()
    log_dir = Path(cli.trainer.log_dir)
    train = json.loads((log_dir / "train_results.json").read_text())
    assert train["train_loss"] > 0 and train["train_runtime"] > 0
    state = json.loads((log_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and state["log_history"][-1]["train_loss"] == pytest.approx(train["train_loss"])
    assert json.loads((log_dir / "all_results.json").read_text())["train_loss"] == train["train_loss"]
    assert "***** train metrics *****" in capsys.readouterr().out  # transformers' log_metrics, as its examples print


def test_a_failed_export_keeps_the_model_already_exported(tmp_path, monkeypatch):
    """The export is written into a staging folder and renamed into place: a full disk in the middle of it leaves the
    model exported before whole (transformers loads it), no partial folder, and an error that names the folder."""
    import errno

    from hf_lightning.modules.export import ExportMixin

    export = tmp_path / "model"
    _run(tmp_path, "fit", "--export_dir", str(export), "--trainer.max_steps", "1")
    before = transformers.AutoModelForSequenceClassification.from_pretrained(export).classifier.weight.clone()
    saving = ExportMixin.save_pretrained

    def disk_fills(self, path, safe_serialization=True):
        saving(self, path, safe_serialization)
        (Path(path) / "model.safetensors").write_bytes(b"cut")  # the weights half written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ExportMixin, "save_pretrained", disk_fills)
    with pytest.raises(OSError, match=r"Could not export the trained model to .*model .*the model already there is "
                                      r"kept"):
        _run(tmp_path, "fit", "--export_dir", str(export), "--trainer.max_steps", "2")
    assert sorted(p.name for p in tmp_path.iterdir() if "model" in p.name) == ["model"]
    after = transformers.AutoModelForSequenceClassification.from_pretrained(export).classifier.weight
    torch.testing.assert_close(after, before)


def test_a_run_without_logger_never_overwrites_the_config_file_it_was_given(tmp_path, monkeypatch):
    """Without a logger the merged config goes to the current folder as config.yaml: where that is the user's own
    config file, the run stops before training, naming the file and the settings to change; the file is untouched."""
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "config.yaml"
    mine.write_text(Path(TINY).read_text() + "# my own notes\n")
    before = mine.read_text()
    with pytest.raises(ValueError, match=r"save its merged config over .*config\.yaml, a config file it was given.*"
                                         r"--trainer\.default_root_dir"):
        main(["fit", "--config", "config.yaml", "--trainer.logger", "false", "--export_dir", "none"])
    assert mine.read_text() == before
    cli = main(["fit", "--config", "config.yaml", "--trainer.logger", "false", "--export_dir", "none",
                "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "1"])
    assert cli.trainer.global_step == 1 and (tmp_path / "run" / "config.yaml").exists()


def test_validate_and_predict(tmp_path):
    cli = _run(tmp_path, "validate")
    assert set(cli.model.eval_results) >= {"eval_loss", "eval_accuracy", "eval_runtime"}
    written = json.loads((Path(cli.trainer.log_dir) / "eval_results.json").read_text())
    assert written == pytest.approx(cli.model.eval_results)
    # a standalone validate() returns and logs the metrics (inside fit, HFFlow writes the eval/* records instead)
    results = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)
    assert results[0]["eval_accuracy"] == pytest.approx(cli.model.eval_results["eval_accuracy"])
    cli = _run(tmp_path, "predict")
    output = cli.model.prediction_output
    assert output.predictions.shape == (32, 2)
    # written beside the metrics, as transformers' example scripts write them
    folder = Path(cli.trainer.log_dir)
    assert json.loads((folder / "predict_results.json").read_text()) == pytest.approx(output.metrics)
    saved = np.load(folder / "predictions.npz")
    assert sorted(saved) == ["label_ids", "predictions"]
    np.testing.assert_array_equal(saved["predictions"], output.predictions)
    np.testing.assert_array_equal(saved["label_ids"], output.label_ids)
    assert cli.model.model.config.id2label == {0: "LABEL_0", 1: "LABEL_1"}  # the data names no label: its values
    assert (folder / "predictions.txt").read_text().splitlines() == [
        "index\tprediction", *(f"{i}\t{int(c)}" for i, c in enumerate(output.predictions.argmax(-1)))]



def test_float32_matmul_precision_is_set_before_anything_is_built(tmp_path, monkeypatch):
    """--float32_matmul_precision high: TF32 matmuls (transformers' tf32=True) for the whole run, set before the
    model is built; a value torch does not know fails before training with the choices."""
    seen = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", seen.append)
    cli = _run(tmp_path, "validate", "--float32_matmul_precision", "high")
    assert seen == ["high"] and cli.model.eval_results["eval_loss"] > 0
    with pytest.raises(SystemExit):
        _run(tmp_path, "validate", "--float32_matmul_precision", "tf32")
    assert seen == ["high"]

def test_env_var_overrides(tmp_path):
    """Environment variables override defaults (a --config file and flags override them in turn)."""
    env = {**os.environ, "HFL_FIT__TRAINER__LOG_EVERY_N_STEPS": "7"}
    code = ("import sys; from hf_lightning.cli import main; cli = main(); "
            "print('EVERY', cli.trainer.log_every_n_steps)")
    out = subprocess.run([sys.executable, "-c", code, "fit", "--config", TINY, "--trainer.default_root_dir",
                          str(tmp_path), "--export_dir", "none", "--trainer.logger", "false"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert "EVERY 7" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize("config", sorted(glob.glob(str(ROOT / "configs/**/*.yaml"), recursive=True)),
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config, "--print_config"])
    assert exit_info.value.code == 0
    assert "class_path" in capsys.readouterr().out


def test_unknown_key_fails_before_training(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", TINY, "--model.init_args.learnin_rate", "1e-3"])
    assert exit_info.value.code != 0
    assert "learnin_rate" in capsys.readouterr().err


def test_configs_with_the_flat_keys_of_earlier_releases_still_parse(tmp_path, capsys):
    """A config written before HFModule and HFDataModule grouped their settings (``model.init_args.learning_rate``,
    ``data.init_args.drop_last``), a model file given to ``--model`` or named (relatively) by another config, a yaml
    string and flat flags parse to exactly the grouped config, with a FutureWarning naming each new key; the old files
    are not rewritten."""
    grouped = yaml.safe_load(Path(TINY).read_text())
    grouped["model"]["init_args"]["compilation"] = {"torch_compile_scope": "blocks"}
    grouped["data"]["init_args"]["loader"] = {"drop_last": True}
    flat = copy.deepcopy(grouped)
    init_args = flat["model"]["init_args"]
    for group in ("optimization", "compilation"):
        init_args.update(init_args.pop(group))
    flat["data"]["init_args"].update(flat["data"]["init_args"].pop("loader"))
    new, old = tmp_path / "new.yaml", tmp_path / "old.yaml"
    new.write_text(yaml.safe_dump(grouped))
    old.write_text(yaml.safe_dump(flat))
    before = old.read_text()

    def printed(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *args, "--print_config"])
        assert exit_info.value.code == 0
        return capsys.readouterr().out

    with pytest.warns(FutureWarning, match=r"model\.init_args\.learning_rate -> model\.init_args\.optimization\."
                                           r"learning_rate.*torch_compile_scope -> model\.init_args\.compilation.*"
                                           r"data\.init_args\.drop_last -> data\.init_args\.loader\.drop_last"):
        from_old = printed("--config", str(old), "--model.adam_beta2", "0.98")
    (tmp_path / "sub").mkdir()
    model_file = tmp_path / "sub" / "model.yaml"  # a model-only file, given to --model or named by another config
    model_file.write_text(yaml.safe_dump(flat["model"]))
    with pytest.warns(FutureWarning, match=r"model\.init_args\.learning_rate -> "):
        from_model_file = printed("--config", str(new), f"--model={model_file}", "--model.init_args.adam_beta2=0.98")
    outer = tmp_path / "sub" / "outer.yaml"
    outer.write_text(yaml.safe_dump({**flat, "model": "model.yaml"}))  # relative to outer.yaml's folder
    with pytest.warns(FutureWarning, match=r"model\.init_args\.learning_rate -> "):
        from_nested_file = printed("--config", str(outer), "--model.adam_beta2", "0.98")
    with pytest.warns(FutureWarning, match=r"model\.init_args\.adam_beta2 -> "):
        from_yaml_text = printed("--config", str(new), "--config", "{model: {init_args: {adam_beta2: 0.98}}}")
    from_new = printed("--config", str(new), "--model.optimization.adam_beta2", "0.98")
    assert from_old == from_new == from_model_file == from_nested_file == from_yaml_text
    model = yaml.safe_load(from_new)["model"]["init_args"]
    assert model["optimization"]["learning_rate"] == 1e-3 and model["optimization"]["adam_beta2"] == 0.98
    assert model["compilation"]["torch_compile_scope"] == "blocks" and "learning_rate" not in model
    data = yaml.safe_load(from_new)["data"]["init_args"]
    assert data["loader"]["drop_last"] is True and "drop_last" not in data
    with pytest.warns(FutureWarning, match=r"data\.init_args\.num_workers -> data\.init_args\.loader\.num_workers"):
        assert "num_workers: 0" in printed("--config", str(new), "--data.num_workers", "0")
    assert old.read_text() == before


def test_label_outside_num_labels_is_caught_before_training(tmp_path):
    train, val = tmp_path / "train.csv", tmp_path / "val.csv"
    train.write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(12)))
    val.write_text("text,label\nx,0\ny,2\n")  # a class the training data (num_labels=2) never has
    with pytest.raises(ValueError, match=r"validation split has label values \[2\] outside \[0, 2\)"):
        main(["fit", "--config", TINY, "--data.init_args.dataset", "csv",
              "--data.init_args.data_files", json.dumps({"train": str(train), "validation": str(val)}),
              "--trainer.logger", "false", "--export_dir", "none", "--trainer.default_root_dir", str(tmp_path)])


def test_any_torch_optimizer_by_class_path(tmp_path):
    extra = tmp_path / "sgd.yaml"
    extra.write_text("model:\n  init_args:\n    optimization: {weight_decay: 0.1}\n"
                     "    optimizer:\n      class_path: torch.optim.SGD\n"
                     "      init_args: {lr: 0.05, momentum: 0.9}\n")
    cli = _run(tmp_path, "fit", "--config", str(extra), "--trainer.max_steps", "2", "--export_dir", "none")
    optimizer = cli.trainer.optimizers[0]
    assert type(optimizer).__name__ == "SGD"
    groups = optimizer.param_groups
    assert [g["initial_lr"] for g in groups] == [0.05, 0.05] and groups[0]["momentum"] == 0.9
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]  # HF's no-decay group for biases and norms


def test_compute_metrics_by_import_path(tmp_path):
    cli = _run(tmp_path, "validate", "--model.init_args.compute_metrics", "tests.helpers.tiny.accuracy_metric")
    results = cli.model.eval_results
    assert results["eval_hf_accuracy"] == pytest.approx(results["eval_accuracy"], abs=1e-9)  # same on 32 samples


def test_several_validation_sets_during_fit(tmp_path):
    """A data module with several validation sets (``validation_split`` as a list): each evaluation logs one record
    per set with transformers' prefix ``eval_<name>_``, ``metric_for_best_model`` names one of them, and the result
    files carry every set's metrics."""
    flow = json.dumps({"class_path": "hf_lightning.callbacks.HFFlow",
                       "init_args": {"eval_strategy": "steps", "eval_steps": 2, "logging_steps": 2,
                                     "metric_for_best_model": "test_accuracy"}})
    cli = _run(tmp_path, "fit", "--export_dir", "none", "--data.init_args.validation_split", "[validation, test]",
               "--trainer.callbacks+", flow)
    log_dir = Path(cli.trainer.log_dir)
    state = json.loads((log_dir / "trainer_state.json").read_text())
    evals = [r for r in state["log_history"] if any(k.startswith("eval_") for k in r)]
    assert [r["step"] for r in evals] == [2, 2, 4, 4]
    assert [sorted(k for k in r if k.endswith(("_loss", "_accuracy"))) for r in evals[:2]] == [
        ["eval_validation_accuracy", "eval_validation_loss"], ["eval_test_accuracy", "eval_test_loss"]]
    best = max(r["eval_test_accuracy"] for r in evals if "eval_test_accuracy" in r)
    assert state["best_metric"] == pytest.approx(best)
    written = json.loads((log_dir / "eval_results.json").read_text())
    assert {"eval_validation_loss", "eval_validation_accuracy", "eval_test_loss", "eval_test_accuracy",
            "epoch"} <= set(written)
    # the two sets differ: each was evaluated on its own data
    assert written["eval_validation_loss"] != written["eval_test_loss"]


def test_model_settings_a_ckpt_path_replaces_are_named(tmp_path):
    """--ckpt_path x.ckpt: Lightning's CLI takes the model's settings from the checkpoint over the flags given; the
    run says which (the checkpoint's learning rate, not the flag's, is the one used)."""
    first = main(["fit", "--config", TINY, "--trainer.logger", "false", "--export_dir", "none",
                  "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "2"])
    ckpt = str(tmp_path / "first.ckpt")
    first.trainer.save_checkpoint(ckpt)
    with pytest.warns(UserWarning, match=r"Lightning takes the model's settings from the checkpoint.*"
                                         r"optimization\.learning_rate: 0\.5 -> 0\.001"):
        resumed = main(["fit", "--config", TINY, "--trainer.logger", "false", "--export_dir", "none",
                        "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "3", "--ckpt_path", ckpt,
                        "--model.init_args.optimization.learning_rate", "0.5"])
    assert resumed.model.optim_config["learning_rate"] == 1e-3 and resumed.trainer.global_step == 3


def test_a_checkpoint_folder_given_as_ckpt_path_is_refused_with_the_way_to_resume_it(tmp_path):
    """--ckpt_path takes Lightning's .ckpt file; a checkpoint-N folder is refused before anything is built, naming
    the HFCheckpoint resume and the weights-only start."""
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    for given in (folder, folder / "model.safetensors"):  # the folder, or its weights file
        with pytest.raises(ValueError, match=r"is a folder \(or a file of one\); --ckpt_path takes a Lightning "
                                             r"\.ckpt file.*resume_from_checkpoint .*checkpoint-4.*"
                                             r"--model\.init_args\.model"):
            main(["fit", "--config", TINY, "--ckpt_path", str(given), "--trainer.logger", "false",
                  "--export_dir", "none", "--trainer.default_root_dir", str(tmp_path)])


def test_hf_checkpoint_with_lightning_checkpointing_off_is_refused_naming_both(tmp_path):
    """HFCheckpoint is Lightning checkpointing: with --trainer.enable_checkpointing false Lightning would refuse it as
    "ModelCheckpoint"; the CLI names HFCheckpoint and the two ways out, before anything is built."""
    with pytest.raises(ValueError, match=r"enable_checkpointing false.*HFCheckpoint.*Remove HFCheckpoint"):
        main(["fit", "--config", TINY, "--config", "configs/checkpointing.yaml", "--trainer.enable_checkpointing",
              "false", "--trainer.logger", "false", "--export_dir", "none",
              "--trainer.default_root_dir", str(tmp_path)])


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--model.optimization.optim", "adamw_torh",
     r"^optimization\.optim='adamw_torh' is unknown\. Did you mean 'adamw_torch'\? Choose one of \[.*'sgd'"),
    ("--model.optimization.lr_scheduler_type", "cosin",
     r"^optimization\.lr_scheduler_type='cosin' is unknown\. Did you mean 'cosine'\? Choose one of \[.*'linear'"),
    ("--model.optimization.learning_rate", "-1", r"^optimization: learning_rate=-1\.0.* must be >= 0"),
    ("--model.optimization.optim", "galore_adamw_layerwise",
     r"^optimization\.optim='galore_adamw_layerwise' updates the weights inside backward.*'galore_adamw'"),
    ("--model.optimization.optim", "lomo", r"^optimization\.optim='lomo' updates the weights inside backward"),
])
def test_a_bad_setting_is_reported_by_its_own_message_before_the_model_loads(tmp_path, monkeypatch, flag, value,
                                                                            message):
    """The error is the setting's own (not jsonargparse's error per Union type with the whole config in it), raised
    while the settings are built: no model is loaded."""
    from hf_lightning.modules import base

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad setting was reported")

    monkeypatch.setattr(base, "load_model", no_loading)
    with pytest.raises(ValueError, match=message) as info:
        main(["fit", "--config", TINY, flag, value, "--trainer.logger", "false", "--export_dir", "none",
              "--trainer.default_root_dir", str(tmp_path)])
    assert info.value.__cause__ is None and "Union" not in str(info.value)


def test_help_names_the_report_and_hpo_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the text
    assert out.startswith("usage: python -m hf_lightning ")
    assert "'python -m hf_lightning report OUTPUT_DIR'" in out and "'python -m hf_lightning hpo --config CONFIG" in out


def test_an_error_raised_from_another_is_still_reported_by_its_own_message(tmp_path):
    """compute_metrics that cannot be imported: hf_lightning's message (raised from the ImportError), not
    jsonargparse's error per Union type."""
    with pytest.raises(ValueError, match=r"^Cannot import 'nosuchpkg\.accuracy'.*Check the module path") as info:
        main(["fit", "--config", TINY, "--model.compute_metrics", "nosuchpkg.accuracy", "--trainer.logger", "false",
              "--export_dir", "none", "--trainer.default_root_dir", str(tmp_path)])
    assert "Union" not in str(info.value)


def test_a_model_that_is_neither_packaged_nor_a_folder_nor_reachable_is_named_with_the_fix(tmp_path):
    """Offline, an unknown model name: the error names the value, the packaged models and the setting to change
    (not transformers' hub message inside jsonargparse's error per Union type)."""
    with pytest.raises(ValueError, match=r"^model='no-such-model' is not a packaged model \(minilm.*--model\.model"):
        main(["fit", "--config", TINY, "--model.model", "no-such-model", "--model.from_config", "false",
              "--trainer.logger", "false", "--export_dir", "none", "--trainer.default_root_dir", str(tmp_path)])


def test_no_accumulation_is_refused_before_training_with_the_setting_to_change(tmp_path):
    with pytest.raises(ValueError, match=r"^trainer\.accumulate_grad_batches=0 must be an integer >= 1"):
        main(["fit", "--config", TINY, "--trainer.accumulate_grad_batches", "0", "--trainer.logger", "false",
              "--export_dir", "none", "--trainer.default_root_dir", str(tmp_path)])
    assert not list(tmp_path.rglob("checkpoint-*"))


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--data.dataset", "no_such_data_set", r"^dataset='no_such_data_set' is not a packaged data set \(movie_reviews"),
    ("--data.dataset", "missing/file.csv", r"^dataset='missing/file\.csv' is not a packaged data set.*--data\.dataset"),
    ("--data.max_length", "0", r"^max_length=0 must be >= 1"),
])
def test_bad_data_settings_are_named_with_the_fix_before_training(tmp_path, flag, value, message):
    with pytest.raises(ValueError, match=message):
        main(["fit", "--config", TINY, flag, value, "--trainer.logger", "false", "--export_dir", "none",
              "--trainer.default_root_dir", str(tmp_path)])
    assert not list(tmp_path.rglob("checkpoint-*"))


def test_eval_results_describe_the_exported_best_model(tmp_path):
    """With load_best_model_at_end the export holds the best checkpoint's weights: eval_results.json and the printed
    eval metrics are that checkpoint's evaluation (as transformers' example scripts evaluate the loaded best model),
    not the last one."""
    config = tmp_path / "best.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "hf_lightning.callbacks.HFFlow",
         "init_args": {"logging_steps": 1, "eval_strategy": "steps", "eval_steps": 2}},
        {"class_path": "hf_lightning.callbacks.checkpoint.HFCheckpoint",
         "init_args": {"output_dir": str(tmp_path / "checkpoints"), "save_strategy": "steps", "save_steps": 2,
                       "load_best_model_at_end": True, "metric_for_best_model": "loss",
                       "greater_is_better": False}}]}}))  # this seed: the loss rises from step 2 to step 4
    cli = _run(tmp_path, "fit", "--config", str(config), "--trainer.enable_checkpointing", "true",
               "--export_dir", str(tmp_path / "model"))
    log_dir = Path(cli.trainer.log_dir)
    state = json.loads((log_dir / "trainer_state.json").read_text())
    evaluations = {r["step"]: r for r in state["log_history"] if "eval_loss" in r}
    assert sorted(evaluations) == [2, 4] and state["best_global_step"] == 2
    reported = json.loads((log_dir / "eval_results.json").read_text())
    assert reported == {k: v for k, v in evaluations[2].items() if k != "step"}
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    from safetensors.torch import load_file

    best = load_file(str(tmp_path / "checkpoints" / "checkpoint-2" / "model.safetensors"))
    torch.testing.assert_close(exported.classifier.weight, best["classifier.weight"])


@pytest.mark.parametrize("flag, value", [("--trainer.val_check_interval", "2"),
                                         ("--trainer.val_check_interval", "1"),  # an int: every batch
                                         ("--trainer.check_val_every_n_epoch", "3")])
def test_a_lightning_validation_schedule_beside_hfflows_is_refused_before_training(tmp_path, flag, value):
    """HFFlow decides when to evaluate: Lightning's own schedule set beside it would do nothing, so the run stops
    before its first step, naming the setting and HFFlow's instead."""
    config = tmp_path / "flow.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "hf_lightning.callbacks.HFFlow", "init_args": {"eval_strategy": "steps", "eval_steps": 2}}]}}))
    with pytest.raises(ValueError, match=rf"trainer\.{flag.split('.')[-1]}={value}.* would be ignored: HFFlow "
                                         r"decides when to evaluate.*eval_steps"):
        _run(tmp_path, "fit", "--config", str(config), flag, value, "--export_dir", "none")
    assert not list(tmp_path.glob("**/train_results.json"))
