"""Two "nodes" of one process each on loopback, started as srun starts tasks, against DDP on one node."""

from __future__ import annotations

import sys

import pytest

from tests.distributed.conftest import HERE, free_port, job_env, read_result, run_nodes

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def slurm_nodes(tmp_path_factory) -> dict:
    out, port, nodes = tmp_path_factory.mktemp("slurm"), str(free_port()), 2
    envs = [job_env(SLURM_NTASKS=str(nodes), SLURM_NNODES=str(nodes), SLURM_NTASKS_PER_NODE="1",
                    SLURM_PROCID=str(rank), SLURM_NODEID=str(rank), SLURM_LOCALID="0", SLURM_JOB_NAME="hfl-test",
                    SLURM_JOB_ID="4242", SLURM_NODELIST="localhost", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
            for rank in range(nodes)]
    run_nodes([[sys.executable, str(HERE / "facade_job.py"), str(out), "4"]] * nodes, envs, out)
    return read_result(out)


def test_two_slurm_nodes_equal_ddp_on_one_node(slurm_nodes, facade_ddp):
    result = slurm_nodes
    assert (result["cluster"], result["num_nodes"], result["world_size"]) == ("SLURMEnvironment", 2, 2)
    assert result["global_step"] == facade_ddp["global_step"]
    assert result["weights"] == pytest.approx(facade_ddp["weights"], abs=1e-6)
    assert result["resumed_weights"] == pytest.approx(facade_ddp["resumed_weights"], abs=1e-6)
    assert result["predictions"] == pytest.approx(facade_ddp["predictions"], abs=1e-6)
    assert result["eval"]["eval_count"] == 5


def test_two_slurm_nodes_count_max_steps_per_rank(slurm_nodes, facade_ddp):
    assert slurm_nodes["max_steps"] == facade_ddp["max_steps"] == 6
