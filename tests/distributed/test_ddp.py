"""Two CPU processes (gloo) against one process with the same global batch, through both doors.

HF-style door: `facade_job.py` under torchrun (fixtures in conftest.py). Lightning door: ``python -m hf_lightning fit``
with ``configs/strategies/ddp.yaml`` stacked on a recipe, under torchrun.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from safetensors.torch import load_file

from tests.distributed.conftest import HERE, ROOT, free_port, job_env, read_result, run_job, torchrun
from tests.helpers.tiny import RegressionDataset

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]


def test_facade_ddp_equals_one_process(facade_ddp, facade_single):
    assert facade_ddp["world_size"] == 2 and facade_ddp["strategy"] == "DDPStrategy"
    assert facade_single["world_size"] == 1
    # Accumulation windows of 3, 3, 2 micro-batches and a last global batch of 4 samples (2 per rank): the label
    # count of each window is summed over ranks, so the gradients equal the one-process ones.
    assert facade_ddp["global_step"] == facade_single["global_step"] == 6
    for name, value in facade_single["weights"].items():
        assert facade_ddp["weights"][name] == pytest.approx(value, abs=1e-5)
    assert facade_ddp["losses"] == pytest.approx(facade_single["losses"], rel=1e-5)
    assert facade_ddp["train_loss"] == pytest.approx(facade_single["train_loss"], rel=1e-5)
    assert facade_single["weights"]["a"] != 0.0  # it trained
    # trainer.end(), a script's last call as in transformers: the process group ends (one process: none to end)
    assert (facade_ddp["group_before_end"], facade_ddp["group_after_end"]) == (True, False)
    assert (facade_single["group_before_end"], facade_single["group_after_end"]) == (False, False)


def test_facade_max_steps_counts_batches_per_rank(facade_ddp, facade_single):
    # transformers' max_steps uses the batches of one rank: ceil(60 / (4 x 2)) = 8 -> 3 updates per epoch, 6 in all.
    assert facade_ddp["max_steps"] == facade_single["max_steps"] == 6
    # and so does len(trainer.get_train_dataloader()) asked for before train(): transformers' prepared loader gives
    # each process ceil(15 batches / 2) = 8 (one process: 60 / 8 = 8); accelerator.distributed_type as transformers'
    assert (facade_ddp["train_batches"], facade_single["train_batches"]) == (8, 8)
    assert (facade_ddp["distributed_type"], facade_single["distributed_type"]) == ("MULTI_CPU", "NO")


def test_evaluate_and_predict_gather_every_sample_once_in_order(facade_ddp, facade_single):
    # 5 samples on 2 ranks: 3 + 2, no padded duplicate; metrics over exactly 5 samples.
    assert facade_ddp["eval"]["eval_count"] == facade_ddp["test_count"] == 5
    for key in ("eval_loss", "eval_mse"):
        assert facade_ddp["eval"][key] == pytest.approx(facade_single["eval"][key], rel=1e-6)
    expected_labels = RegressionDataset(5, seed=7).y
    np.testing.assert_allclose(facade_ddp["label_ids"], expected_labels, rtol=0, atol=0)  # data set order
    np.testing.assert_allclose(facade_ddp["predictions"], facade_single["predictions"], atol=1e-5)


def test_checkpoint_and_exact_resume_under_ddp(facade_ddp):
    # transformers' layout under DDP: one RNG file per rank; resuming inside epoch 0 reproduces the weights.
    assert facade_ddp["rng_files"] == ["rng_state_0.pth", "rng_state_1.pth"]
    assert facade_ddp["resumed_step"] == facade_ddp["global_step"]
    for name, value in facade_ddp["weights"].items():
        assert facade_ddp["resumed_weights"][name] == pytest.approx(value, abs=1e-7)


_TINY_BERT = json.dumps({"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128,
                         "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})


def _cli_args(out, batch: int, devices: int, *recipes: str) -> list[str]:
    configs = [w for recipe in ("tests/assets/tiny_cli.yaml", *recipes) for w in ("--config", str(ROOT / recipe))]
    return ["fit", *configs, "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
            "--data.init_args.batch_size", str(batch), "--model.init_args.model", _TINY_BERT, "--trainer.max_steps",
            "3", "--trainer.logger", "false", "--trainer.default_root_dir", str(out), "--export_dir",
            str(out / "export")]


def test_cli_with_stacked_ddp_recipe_equals_one_process(tmp_path):
    from hf_lightning.cli import main

    two, one = tmp_path / "two", tmp_path / "one"
    run_job(torchrun("-m", "hf_lightning", *_cli_args(two, 4, 2, "configs/strategies/ddp.yaml")), tmp_path / "two.log")
    cli = main(_cli_args(one, 8, 1))
    assert cli.trainer.world_size == 1 and cli.trainer.global_step == 3
    ddp, single = load_file(two / "export/model.safetensors"), load_file(one / "export/model.safetensors")
    assert set(ddp) == set(single)
    assert max(float((ddp[k] - single[k]).abs().max()) for k in ddp) < 1e-5


@pytest.mark.parametrize("recipe", ["ddp.yaml", "fsdp2.yaml"])
def test_cli_launched_by_lightning_itself_equals_one_process(tmp_path, recipe):
    """``--trainer.devices 2`` without torchrun: Lightning starts the second process (LOCAL_RANK and WORLD_SIZE set,
    no RANK) and the flow's TrainingArguments must not try to join a process group on their own. With FSDP2 the
    export after fit gathers the sharded weights (every rank takes part, rank zero writes)."""
    from hf_lightning.cli import main

    two, one = tmp_path / "two", tmp_path / "one"
    cmd = [sys.executable, "-m", "hf_lightning", *_cli_args(two, 4, 2, f"configs/strategies/{recipe}"),
           "--trainer.callbacks+=hf_lightning.callbacks.HFFlow", "--trainer.callbacks.logging_steps=1"]
    run_job(cmd, tmp_path / "two.log", env=job_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())))
    cli = main(_cli_args(one, 8, 1))
    assert cli.trainer.global_step == 3
    ddp, single = load_file(two / "export/model.safetensors"), load_file(one / "export/model.safetensors")
    assert max(float((ddp[k] - single[k]).abs().max()) for k in ddp) < 1e-5
    state = json.loads((two / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and [r["step"] for r in state["log_history"] if "loss" in r] == [1, 2, 3]


def test_resume_with_another_number_of_processes(facade_ddp, facade_single, tmp_path):
    """A checkpoint written by one process resumed by two (and the reverse), with the same global batch: as
    transformers, the missing per-rank RNG files are skipped and the position is computed with the new layout; the
    run ends with the weights of the uninterrupted one."""
    one_to_two = tmp_path / "one_to_two"
    checkpoint = f"{facade_single['dir']}/full/checkpoint-2"
    run_job(torchrun(str(HERE / "facade_job.py"), str(one_to_two), "4", "resume", checkpoint), tmp_path / "job.log")
    resumed = read_result(one_to_two)
    assert resumed["world_size"] == 2 and resumed["global_step"] == facade_single["global_step"]
    for name, value in facade_single["weights"].items():
        assert resumed["weights"][name] == pytest.approx(value, abs=1e-5)

    from tests.distributed.facade_job import resume

    two_to_one = resume(str(tmp_path / "two_to_one"), 8, f"{facade_ddp['dir']}/full/checkpoint-2")
    assert two_to_one["world_size"] == 1 and two_to_one["global_step"] == facade_ddp["global_step"]
    for name, value in facade_ddp["weights"].items():
        assert two_to_one["weights"][name] == pytest.approx(value, abs=1e-5)


def test_an_overridden_evaluate_chooses_the_best_checkpoint_under_ddp(tmp_path):
    """Each evaluation during training runs the subclass's ``evaluate`` on both ranks (a standalone evaluation inside
    the running fit): every sample is evaluated once, and the records, the best checkpoint (chosen by the override's
    metric) and a final ``evaluate()`` equal those of one process with the same global batch. The override's
    ``accelerator.pad_across_processes`` and ``gather_function`` pad and gather across the ranks as accelerate's."""
    from tests.distributed.override_job import run

    two = tmp_path / "two"
    two.mkdir()
    run_job(torchrun(str(HERE / "override_job.py"), str(two), "4"), two / "job.log")
    ddp, single = read_result(two), run(str(tmp_path / "one"), 8)
    assert ddp["best"] == single["best"] == "checkpoint-2"
    assert ddp["counts"] == single["counts"] == [8.0] * 6  # each window's labels, summed over the two processes
    assert ddp["final"]["eval_count"] == 10.0 and ddp["final"]["eval_custom"] == -6.0
    # trainer.accelerator.pad_across_processes and trainer.gather_function, as accelerate's
    assert ddp["gathered"] == {"tensors": [[0.0, 0.0], [-1.0, -1.0], [1.0, 1.0], [1.0, 1.0]],
                               "objects": ["rank 0", "rank 1"]}
    assert single["gathered"] == {"tensors": [[0.0, 0.0]], "objects": ["rank 0"]}
    assert len(ddp["records"]) == len(single["records"])
    for mine, expected in zip(ddp["records"], single["records"], strict=True):
        assert sorted(mine) == sorted(expected)
        assert np.allclose([mine[k] for k in sorted(mine)], [expected[k] for k in sorted(expected)], rtol=1e-6)
    assert np.allclose([ddp["final"][k] for k in sorted(ddp["final"])],
                       [single["final"][k] for k in sorted(single["final"])], rtol=1e-6)


@pytest.mark.parametrize("kind", ["torch", "sized", "datasets"])
def test_a_stream_is_shared_out_to_the_processes_as_transformers_shares_it(tmp_path, kind):
    """Under torchrun, transformers.Trainer (accelerate's dispatch) gives each process its share of every global
    batch of a stream; hf_lightning trains each process on the same samples in the same steps (it trained every
    process on the whole stream; a ``datasets.IterableDataset`` crashed), and evaluate() / predict() return each
    sample once, in the stream's order (they returned every sample twice)."""
    seen, results = {}, {}
    for library in ("transformers", "hf_lightning"):
        out = tmp_path / library
        out.mkdir()
        run_job(torchrun(str(HERE / "stream_job.py"), str(out), library, kind), tmp_path / f"{library}.log")
        seen[library] = [json.loads((out / f"seen_{rank}.json").read_text()) for rank in (0, 1)]
        results[library] = read_result(out)
    ours, theirs = results["hf_lightning"], results["transformers"]
    assert seen["hf_lightning"] == seen["transformers"]
    assert seen["transformers"][0][0] != seen["transformers"][1][0]  # the processes train on different samples
    assert ours["global_step"] == theirs["global_step"] and ours["epoch"] == pytest.approx(theirs["epoch"])
    assert ours["weights"] == pytest.approx(theirs["weights"], rel=1e-5)
    assert ours["losses"] == pytest.approx(theirs["losses"], rel=1e-5)
    assert ours["eval_keys"] == theirs["eval_keys"]
    assert len(ours["label_ids"]) == len(theirs["label_ids"]) == 13
    assert ours["label_ids"] == pytest.approx(theirs["label_ids"]) and \
        ours["predictions"] == pytest.approx(theirs["predictions"], rel=1e-5)
    assert (ours["object_predictions"], ours["object_label_ids"]) == (ours["predictions"], ours["label_ids"])
    # eval_loss: the mean over the 13 samples, each once (transformers also averages the sample accelerate repeats
    # to even out the last batch: parity.md, difference 21)
    errors = (np.asarray(ours["predictions"]).reshape(-1) - np.asarray(ours["label_ids"])) ** 2
    assert ours["eval_loss"] == pytest.approx(float(errors.mean()), rel=1e-5)
