"""`gather_across_ranks` on two real gloo processes (run inside facade_job.py, through the Trainer's strategy):
ragged shapes, nesting, dtypes, ranks without data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def gathered(facade_ddp) -> dict:
    return pickle.loads((Path(facade_ddp["dir"]) / "gather.pkl").read_bytes())


def test_all_rows_in_rank_order_short_rows_padded(gathered):
    expected = np.full((5, 7), -100, dtype=np.float32)
    expected[:3] = np.arange(21).reshape(3, 7)
    expected[3:, :5] = 100 + np.arange(10).reshape(2, 5)
    np.testing.assert_array_equal(gathered["ragged"], expected)  # padded with -100, as nested_concat pads
    assert gathered["ragged"].dtype == np.float32


def test_nesting_and_dtypes_survive(gathered):
    values, extra = gathered["nested"]
    np.testing.assert_array_equal(values, [0, 0, 0, 1, 1])
    assert values.dtype == np.float64 and extra["ids"].dtype == np.int64
    np.testing.assert_array_equal(extra["ids"][3:, :5], 1)
    np.testing.assert_array_equal(extra["ids"][3:, 5:], -100)
    np.testing.assert_array_equal(gathered["mask"], [True, False, True, False, True])
    assert gathered["mask"].dtype == np.bool_


def test_ranks_without_data_add_nothing(gathered):
    np.testing.assert_array_equal(gathered["rank0_only"], [0, 1, 2])
    np.testing.assert_array_equal(gathered["rank1_only"], [10, 11])  # the layout comes from the rank that has data
    assert gathered["nobody"] is None


def test_gathering_as_objects_gives_the_same_arrays(gathered):
    """eval_use_gather_object: the same rows in rank order, padded alike, dtypes kept, through all_gather_object."""
    objects = gathered["objects"]
    for name in ("ragged", "mask", "rank0_only", "rank1_only"):
        np.testing.assert_array_equal(objects[name], gathered[name])
        assert objects[name].dtype == gathered[name].dtype, name
    values, extra = objects["nested"]
    np.testing.assert_array_equal(values, gathered["nested"][0])
    np.testing.assert_array_equal(extra["ids"], gathered["nested"][1]["ids"])
    assert objects["nobody"] is None
