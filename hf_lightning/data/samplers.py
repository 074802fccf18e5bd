"""The evaluation and length-grouped samplers of `HFDataModule` (the training order is `loader.HFRandomSampler`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import LengthGroupedSampler

from hf_lightning.data.loader import ResumableBatches


class ShardedSequentialSampler(Sampler[int]):
    """Evaluation order: rank ``r`` takes the ``r``-th contiguous block, with no padded duplicates.

    Gathering the ranks' outputs in rank order therefore restores dataset order, and metrics see each sample once.
    """

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0) -> None:
        # balanced blocks: the first num_samples % num_replicas ranks get one more (no rank is left empty needlessly)
        base, extra = divmod(num_samples, num_replicas)
        start = rank * base + min(rank, extra)
        self.indices = range(start, start + base + (1 if rank < extra else 0))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' LengthGroupedSampler with HF's per-epoch reseeding (``seed + epoch``)."""

    def __init__(self, batch_size: int, dataset: Any, lengths: list[int] | None, seed: int,
                 model_input_name: str | None = None) -> None:
        super().__init__(batch_size, dataset=dataset, lengths=lengths, generator=torch.Generator(),
                         model_input_name=model_input_name)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


class RebalancedBatches(ResumableBatches):
    """transformers' ``BatchRebalanceSampler`` (``train_sampling_strategy="batch_rebalance"``: per optimizer step,
    micro-batches of variable size balanced by padded-length cost across ranks and accumulation steps), resumable
    part-way through a pass like `HFBatchSampler`."""

    def __init__(self, rebalance: Any) -> None:
        self.sampler = rebalance

    def _batches(self) -> Iterator[list[int]]:
        return iter(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
