"""The train loader (hf_lightning/data/loader.py): HF sample order, rank sharding, accumulation windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from torch.utils.data import DataLoader

from hf_lightning.data.loader import WINDOW_KEY, HFBatchSampler, HFRandomSampler, TrainLoader, split_window
from tests.helpers.tiny import RegressionDataset, RegressionModel


def test_hf_random_sampler_matches_transformers_trainer_order(tmp_path):
    """The order of epoch e equals transformers.Trainer's train dataloader order for the same seed."""
    ds = RegressionDataset(length=23)
    args = transformers.TrainingArguments(tmp_path, per_device_train_batch_size=23, seed=7, report_to=[], use_cpu=True)
    hf = transformers.Trainer(model=RegressionModel(), args=args, train_dataset=ds)
    loader = hf.get_train_dataloader()
    sampler = HFRandomSampler(len(ds), seed=7)
    for epoch in range(3):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        hf_x = next(iter(loader))["input_x"]
        sampler.set_epoch(epoch)
        ours = torch.tensor(ds.x[list(sampler)])
        torch.testing.assert_close(hf_x, ours)


def test_batch_sampler_shards_one_permutation_across_ranks():
    order = list(range(10))
    single = list(HFBatchSampler(order, batch_size=4))
    ranks = [list(HFBatchSampler(order, batch_size=2, num_replicas=2, rank=r)) for r in range(2)]
    # Each global batch of the 2-rank run holds the samples of the 1-rank batch.
    for i, batch in enumerate(single):
        assert sorted(ranks[0][i] + ranks[1][i]) == sorted(batch)
    sampler = HFBatchSampler(order, batch_size=4)
    sampler.skip_batches = 2
    assert list(sampler) == [single[2]]


def _tagged(n_batches: int, accumulate: int, skip: int = 0) -> list:
    rows = [{"labels": torch.tensor([1, -100, 2][: 1 + i % 3])} for i in range(n_batches)]
    loader = TrainLoader(DataLoader(rows, batch_size=None), accumulate)
    if skip:
        loader.skip_first_batches(skip)
    return [split_window(b)[1] for b in loader]


def test_windows_are_epoch_aligned_with_a_short_last_window():
    windows = _tagged(7, accumulate=3)
    assert [w.size for w in windows] == [3, 3, 3, 3, 3, 3, 1]
    assert [w.index for w in windows] == [0, 1, 2, 0, 1, 2, 0]
    # label counts (-100 excluded) over each window: lengths 1,2,3 -> 1,1,2 items per batch
    assert [w.num_items for w in windows] == [4, 4, 4, 4, 4, 4, 1]


def test_window_tag_is_removed_before_the_model_sees_the_batch():
    batch = {"labels": torch.tensor([1]), WINDOW_KEY: "x"}
    inputs, window = split_window(batch)
    assert WINDOW_KEY not in inputs and window == "x"


@pytest.mark.parametrize("pad", [True, False])
def test_a_stream_is_shared_out_in_global_batches_and_put_back_in_order(pad):
    """`DispatchedShard`: process r takes the r-th batch_size of each global batch; the short last one is split
    evenly (training: completed from the first batch, so every process has as many samples; evaluation: no repeats),
    and `interleave` restores the stream's order from the processes' rows, also for ragged arrays."""
    from hf_lightning.data.samplers import DispatchedShard, interleave

    for n in range(30):
        for world in (1, 2, 3):
            for batch in (1, 2, 4):
                shards = [DispatchedShard(range(n), batch, world, r, pad) for r in range(world)]
                parts = [list(shard) for shard in shards]
                assert [len(p) for p in parts] == [len(shard) for shard in shards]
                if pad:
                    assert len({len(p) for p in parts}) <= 1 and set().union(*parts) == set(range(n))
                else:
                    assert interleave(parts, batch) == list(range(n))
                    assert interleave([np.array(p, dtype=np.int64) for p in parts], batch).tolist() == list(range(n))
    # 50 samples, batches of 4 on 2 processes: accelerate's dispatch gives the last two samples one each
    assert [list(DispatchedShard(range(50), 4, 2, r, True))[-1] for r in (0, 1)] == [48, 49]
    ragged = interleave([np.ones((2, 3)), np.zeros((1, 5))], 2)
    assert ragged.shape == (3, 5) and ragged[0, 4] == -100


def test_gathered_object_outputs_are_reordered_output_by_output():
    """eval_use_gather_object with a stream: a model's several outputs (a tuple) are put back into the stream's order
    each on its own, not as if the outputs were samples."""
    from hf_lightning.data.samplers import interleave
    from hf_lightning.modules.gather import _reordered

    rank0 = (np.array([0, 1, 4, 5]), np.array([10, 11, 14, 15]))
    rank1 = (np.array([2, 3, 6]), np.array([12, 13, 16]))
    joined = _reordered([rank0, rank1], lambda parts: interleave(parts, 2))
    assert [a.tolist() for a in joined] == [[0, 1, 2, 3, 4, 5, 6], [10, 11, 12, 13, 14, 15, 16]]
