"""The evaluation and length-grouped samplers of `HFDataModule` (the training order is `loader.HFRandomSampler`), and
the per-process share of an iterable data set (`DispatchedShard`)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, Sampler
from transformers.trainer_pt_utils import LengthGroupedSampler, numpy_pad_and_concatenate
from transformers.trainer_utils import has_length

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


class DispatchedShard(IterableDataset):
    """One process's share of an iterable data set (a stream) under several processes, as accelerate's
    ``DataLoaderDispatcher`` hands it out to transformers.Trainer's processes: the stream is cut into global batches of
    ``batch_size`` x ``num_processes`` samples, and process ``r`` takes the ``r``-th ``batch_size`` of each.

    Each process reads the whole stream (accelerate reads it on the first process and sends the batches), so the
    stream must give every process the same samples in the same order (a seeded shuffle does).

    The last, short global batch: for training (``pad=True``) it is split evenly, each process's share completed
    from the first global batch, as accelerate completes it, so every process trains the same number of steps; for
    evaluation (``pad=False``) it is split without duplicates (the first processes take one sample more), and
    `interleave` puts the gathered outputs back into the stream's order.
    """

    def __init__(self, dataset: Any, batch_size: int, num_processes: int, process_index: int, pad: bool) -> None:
        self.dataset = dataset
        self.batch_size, self.num_processes, self.process_index, self.pad = (
            batch_size, num_processes, process_index, pad)

    def set_epoch(self, epoch: int) -> None:
        """Passed on to the stream (a shuffled ``datasets.IterableDataset`` reshuffles per pass)."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def _tail_share(self, tail: int) -> tuple[int, int]:
        """(start, size) of this process's share of a last global batch of ``tail`` samples."""
        if self.pad:
            size = -(-tail // self.num_processes)
            return self.process_index * size, size
        base, extra = divmod(tail, self.num_processes)
        rank = self.process_index
        return rank * base + min(rank, extra), base + (1 if rank < extra else 0)

    def __len__(self) -> int:
        if not has_length(self.dataset):
            raise TypeError(f"{type(self.dataset).__name__} has no length")
        full, tail = divmod(len(self.dataset), self.batch_size * self.num_processes)
        return full * self.batch_size + (self._tail_share(tail)[1] if tail else 0)

    def __iter__(self) -> Iterator[Any]:
        size, rank = self.batch_size * self.num_processes, self.process_index
        buffer: list[Any] = []
        first: list[Any] | None = None
        for sample in self.dataset:
            buffer.append(sample)
            if len(buffer) == size:
                yield from buffer[rank * self.batch_size:(rank + 1) * self.batch_size]
                first = first if first is not None else buffer[:self.num_processes]
                buffer = []
        if buffer:
            start, share = self._tail_share(len(buffer))
            if self.pad:  # accelerate completes it from the first batch (here also a stream shorter than that)
                filler = first if first is not None else buffer[:self.num_processes]
                while len(buffer) < share * self.num_processes:
                    buffer += filler
            yield from buffer[start:start + share]


def interleave(parts: list[Any], batch_size: int) -> Any:
    """The processes' gathered rows of a `DispatchedShard` (``parts[r]``: process ``r``'s rows, in its order) in the
    stream's order: each global batch's ``batch_size`` rows of process 0, then of process 1..., then the last
    global batch's shares in process order."""
    rows = [len(part) for part in parts]
    full = [n // batch_size for n in rows]  # a share of the last batch as long as a whole batch counts as one
    order: list[Any] = []
    for batch in range(max(full, default=0)):
        order += [part[batch * batch_size:(batch + 1) * batch_size] for part, n in zip(parts, full) if batch < n]
    order += [part[n * batch_size:] for part, n in zip(parts, full) if len(part) > n * batch_size]
    if not order:
        return parts[0][:0]
    if not isinstance(parts[0], np.ndarray):
        return [row for piece in order for row in piece]
    if len({piece.shape[1:] for piece in order}) > 1:  # ragged (per-process objects): padded as transformers pads
        return functools.reduce(numpy_pad_and_concatenate, order)
    return np.concatenate(order)
