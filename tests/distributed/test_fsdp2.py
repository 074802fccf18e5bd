"""FSDP2 (`HFFSDP2Strategy`: ``fully_shard`` on Lightning's ModelParallelStrategy) on 2 CPU processes with gloo."""

from __future__ import annotations

import numpy as np
import pytest

from tests.distributed.conftest import HERE, read_result, run_job, torchrun

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]


def _max_abs_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(max(abs(x - y) for x, y in zip(a[k], b[k])) for k in a)


@pytest.fixture(scope="module")
def fsdp2(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("fsdp2")
    run_job(torchrun(str(HERE / "lightning_job.py"), "fsdp2", str(out), "2", "1", "2"), out / "job.log")
    return read_result(out)


def test_fsdp2_training_equals_one_process(fsdp2, tmp_path):
    from tests.distributed.lightning_job import run

    single = run("fsdp2", str(tmp_path), 1, 1, 4, resume=False)
    assert fsdp2["strategy"] == "HFFSDP2Strategy" and fsdp2["world_size"] == 2
    assert fsdp2["parameter_types"] == ["DTensor"]  # every parameter is a shard (BertLayer / BertEmbeddings + root)
    assert fsdp2["global_step"] == single["global_step"] == 16
    assert _max_abs_diff(fsdp2["weights"], single["weights"]) < 1e-5


def test_fsdp2_sharded_checkpoint_resumes_exactly(fsdp2):
    # SHARDED_STATE_DICT: Lightning writes a folder with one shard file per rank plus its metadata.
    assert fsdp2["checkpoint_is_dir"]
    assert [f for f in fsdp2["checkpoint_files"] if f.endswith(".distcp")] == ["__0_0.distcp", "__1_0.distcp"]
    assert fsdp2["interrupted_step"] == 8 and fsdp2["resumed_step"] == 16
    assert _max_abs_diff(fsdp2["resumed_weights"], fsdp2["weights"]) == 0.0


def test_hf_style_trainer_with_fsdp_equals_one_process(tmp_path):
    """TrainingArguments(fsdp=...) under torchrun: transformers' checkpoint layout, and an evaluation of 7 samples
    where the ranks run 2 and 1 batches (sharded parameters are gathered in every forward: the ranks are evened out)."""
    from tests.distributed.facade_job import run_fsdp

    run_job(torchrun(str(HERE / "facade_job.py"), str(tmp_path / "two"), "2", "fsdp"), tmp_path / "two.log")
    sharded, single = read_result(tmp_path / "two"), run_fsdp(str(tmp_path / "one"), 4, fsdp=False)
    assert sharded["strategy"] == "HFFSDP2Strategy" and single["strategy"] == "SingleDeviceStrategy"
    assert sharded["train_loss"] == pytest.approx(single["train_loss"], rel=1e-6)
    assert sharded["eval"]["eval_count"] == 7
    assert sharded["eval"] == pytest.approx(single["eval"], rel=1e-6)
    np.testing.assert_allclose(sharded["predictions"], single["predictions"], atol=1e-6)
    assert {"model.safetensors", "optimizer.pt", "rng_state_0.pth", "rng_state_1.pth"} <= set(
        sharded["checkpoint_files"])
    # save_model() on every rank gathers the shards: the export reloads with from_pretrained, equal to one process
    assert set(sharded["exported"]) == set(single["exported"]) and sharded["exported"]
    for name, value in single["exported"].items():
        assert sharded["exported"][name] == pytest.approx(value, rel=1e-5, abs=1e-5), name
