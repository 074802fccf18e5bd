"""The training data path: HF's per-epoch sample order, rank sharding of one permutation, accumulation windows.

Three small pieces keep hf_lightning's numbers equal to ``transformers.Trainer``'s:

- `HFRandomSampler`: epoch ``e`` visits ``torch.randperm(n, generator=manual_seed(seed + e))``, the order accelerate's
  seedable sampler gives HF's Trainer.
- `HFBatchSampler`: cuts that order into *global* batches of ``batch_size * world_size`` and gives rank ``r`` its slice,
  so a 2-process run sees exactly the samples a 1-process run with the same global batch sees. It can skip the first
  batches of an epoch (exact resume) without loading them.
- `TrainLoader`: groups micro-batches into accumulation windows (aligned to the epoch start, the last one possibly
  shorter, as HF does) and tags each batch with the window's size and label count, which the module needs *before* the
  first forward of the window to normalise the loss the way HF does (``num_items_in_batch``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler

from hf_lightning import progress

#: Key under which `TrainLoader` stores the `WindowInfo` of a dict batch (popped by the module before the forward).
WINDOW_KEY = "_hfl_window"


class WindowInfo(NamedTuple):
    """Where a micro-batch sits in its gradient-accumulation window."""

    num_items: Any  # labels != -100 over the whole window on this rank (None: not countable); see `given`
    size: int  # micro-batches in the window (the last window of an epoch may be shorter)
    index: int  # position of this micro-batch in the window
    given: bool = False  # num_items is an overridden get_batch_samples' value, passed on as it is (no sum over ranks)


class WindowedBatch(NamedTuple):
    """A non-dict batch with its `WindowInfo` (dict batches carry it under `WINDOW_KEY`)."""

    batch: Any
    window: WindowInfo


class HFRandomSampler(Sampler[int]):
    """Random order of epoch ``e``: ``torch.randperm(n)`` with a generator seeded ``seed + e``."""

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        yield from torch.randperm(self.num_samples, generator=generator).tolist()

    def __len__(self) -> int:
        return self.num_samples


class ResumableBatches(Sampler[list[int]]):
    """Batches of an epoch order (``sampler``) that a resume can start part-way through, without loading the
    batches it skips (``skip_batches``, consumed by the next pass), and that move to the next epoch's order after a
    pass run to its end, as accelerate's loaders do (a loader iterated by hand reshuffles; a pass broken off keeps its
    order; Lightning sets the epoch before each epoch anyway). Subclasses give the pass's batches (`_batches`)."""

    sampler: Any
    skip_batches = 0

    def set_epoch(self, epoch: int) -> None:
        """The order of the next pass; Lightning sets it on ``sampler`` itself before each training epoch."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _batches(self) -> Iterator[list[int]]:
        """This rank's batches of one pass, in order (an empty one counts as a batch but is not yielded)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip_batches = self.skip_batches, 0
        for i, batch in enumerate(self._batches()):
            if i >= skip and batch:
                yield batch
        if hasattr(self.sampler, "set_epoch") and isinstance(getattr(self.sampler, "epoch", None), int):
            self.sampler.set_epoch(self.sampler.epoch + 1)


class HFBatchSampler(ResumableBatches):
    """Global batches of ``batch_size * num_replicas`` consecutive indices; rank ``rank`` takes its slice.

    Args:
        sampler: Yields the epoch's sample order (same on every rank).
        batch_size: Per-device batch size.
        drop_last: Drop the last incomplete global batch.
        num_replicas: World size.
        rank: This process's rank.
    """

    def __init__(
        self, sampler: Sampler[int], batch_size: int, drop_last: bool = False, num_replicas: int = 1, rank: int = 0
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1.")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank

    def _global_batches(self) -> Iterator[list[int]]:
        size = self.batch_size * self.num_replicas
        chunk: list[int] = []
        for index in self.sampler:
            chunk.append(index)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk and not self.drop_last:
            yield chunk

    def _batches(self) -> Iterator[list[int]]:
        for chunk in self._global_batches():
            # A short last global batch is split as evenly as possible; a rank may get an empty share.
            share = math.ceil(len(chunk) / self.num_replicas)
            yield chunk[self.rank * share : (self.rank + 1) * share]

    def __len__(self) -> int:
        return progress.batches_per_epoch(len(self.sampler), self.batch_size * self.num_replicas, self.drop_last)


class EpochDataLoader(DataLoader):
    """The training DataLoader, with the ``set_epoch`` of accelerate's prepared loaders: the order of the next pass."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)


class KeptWorkersDataLoader(DataLoader):
    """An evaluation DataLoader with ``persistent_workers`` whose workers outlive the Lightning loop that ran it:
    Lightning shuts a loader's workers down when ``validate()`` / ``predict()`` ends; transformers keeps them from one
    ``evaluate()`` to the next (and they go on with their random streams)."""

    @property
    def _iterator(self) -> None:  # what Lightning's loop resets and shuts down: nothing
        return None

    @_iterator.setter
    def _iterator(self, value: Any) -> None:
        pass

    def __iter__(self) -> Any:
        kept = self.__dict__.get("_kept_iterator")
        if kept is None:
            kept = self.__dict__["_kept_iterator"] = self._get_iterator()
        else:
            kept._reset(self)
        return kept


def count_label_items(batch: Any, shift_labels: bool = False) -> int | None:
    """HF's ``num_items_in_batch`` for one micro-batch: labels != -100 (``labels[..., 1:]`` for causal LM)."""
    if not isinstance(batch, Mapping) or "labels" not in batch or not torch.is_tensor(batch["labels"]):
        return None
    labels = batch["shift_labels"] if "shift_labels" in batch else batch["labels"]
    if shift_labels and "shift_labels" not in batch:
        labels = labels[..., 1:]
    return int(labels.ne(-100).sum())


class TrainLoader:
    """Iterates a training `DataLoader` in accumulation windows, tagging each batch with its `WindowInfo`.

    Lightning accepts any sized iterable as a train dataloader; this one also exposes ``batch_sampler`` so Lightning's
    per-epoch ``set_epoch`` call reaches `HFRandomSampler`.

    Args:
        dataloader: The per-rank micro-batch loader.
        accumulate_grad_batches: Micro-batches per optimizer step (set by the module from the Lightning Trainer).
        count_items: Counts the loss items of a batch (`count_label_items` by default).
        epoch: The training epoch about to iterate (the Lightning Trainer's ``current_epoch``): a data set without a
            length that has ``set_epoch`` (a shuffled ``datasets.IterableDataset``) gets it before each pass, so each
            pass is shuffled anew, as accelerate's loaders do for transformers.Trainer.
        draw: ``(iterator, num_batches) -> (batches, num_items_in_batch)``: draws each window instead of the loader
            (an overridden ``get_batch_samples``, called as transformers calls it, once per window); its count is
            passed on to the loss as it is. Fewer batches than asked for end the pass of a stream; from a loader
            with a length (whose last window is asked for exactly), they are an error.
    """

    def __init__(
        self,
        dataloader: DataLoader,
        accumulate_grad_batches: int = 1,
        count_items: Callable[[Any], int | None] = count_label_items,
        epoch: Callable[[], int] | None = None,
        draw: Callable[[Iterator[Any], int], tuple[list[Any], Any]] | None = None,
    ) -> None:
        self.dataloader = dataloader
        self.accumulate_grad_batches = accumulate_grad_batches
        self.count_items = count_items
        self.epoch = epoch
        self.draw = draw
        self._start_batch = 0

    @property
    def batch_sampler(self) -> Any:
        return self.dataloader.batch_sampler

    @property
    def dataset(self) -> Any:
        return self.dataloader.dataset

    def __len__(self) -> int:
        return len(self.dataloader)

    def skip_first_batches(self, num_batches: int) -> None:
        """Makes the next epoch start after ``num_batches`` batches (resume), without loading them."""
        sampler = self.dataloader.batch_sampler
        if isinstance(sampler, ResumableBatches):
            sampler.skip_batches = num_batches
        self._start_batch = num_batches

    def _windows(self, iterator: Iterator[Any], total: int | None,
                 start: int) -> Iterator[tuple[list[Any], WindowInfo]]:
        """The pass's windows, each with the `WindowInfo` of its first micro-batch."""
        k = self.accumulate_grad_batches
        position = start
        while total is None or position < total:
            # Windows are aligned to the epoch start; a resumed epoch completes the window it was in.
            want = k - position % k
            if total is not None:
                want = min(want, total - position)
            window, info = self._draw(iterator, want)
            if self.draw is not None and len(window) > want:
                raise ValueError(f"get_batch_samples returned {len(window)} batches where {want} were asked for: it "
                                 "returns at most num_batches batches, the next ones of epoch_iterator.")
            if self.draw is not None and total is not None and len(window) < want:
                raise ValueError(f"get_batch_samples returned {len(window)} batches where {want} were asked for, "
                                 f"before the end of the epoch ({position + len(window)} of {total} batches): it "
                                 "returns the next num_batches batches of epoch_iterator (fewer only at its end).")
            if not window:
                return
            position += len(window)
            yield window, info
            if len(window) < want:
                return

    def _draw(self, iterator: Iterator[Any], want: int) -> tuple[list[Any], WindowInfo]:
        """The next window of (at most) ``want`` micro-batches and the `WindowInfo` of its first one."""
        if self.draw is not None:
            drawn, num_items = self.draw(iterator, want)
            window = list(drawn)
            return window, WindowInfo(num_items, len(window), 0, given=True)
        window = [batch for _, batch in zip(range(want), iterator)]
        counts = [self.count_items(b) for b in window]
        return window, WindowInfo(None if any(c is None for c in counts) else sum(counts), len(window), 0)

    def __iter__(self) -> Iterator[Any]:
        start, self._start_batch = self._start_batch, 0
        total = len(self.dataloader) if _has_len(self.dataloader) else None
        dataset = getattr(self.dataloader, "dataset", None)
        set_epoch = getattr(dataset, "set_epoch", None)
        if self.epoch is not None and isinstance(dataset, IterableDataset) and callable(set_epoch):
            set_epoch(self.epoch())
        iterator = iter(self.dataloader)
        if start and not isinstance(self.dataloader.batch_sampler, ResumableBatches):
            for _ in range(start):  # e.g. an iterable dataset: the seen batches must be drawn to be skipped
                next(iterator, None)
        # Lightning's fetcher reads a loader without a length one batch ahead itself; a sized one it does not.
        ahead = _one_ahead(iterator) if total is not None else iterator
        for window, first in self._windows(ahead, total, start):
            for i, batch in enumerate(window):
                info = first._replace(index=i)
                if isinstance(batch, dict):
                    batch[WINDOW_KEY] = info
                    yield batch
                elif isinstance(batch, Mapping):  # BatchEncoding and other mappings
                    yield {**batch, WINDOW_KEY: info}
                else:
                    yield WindowedBatch(batch, info)


def _one_ahead(iterator: Iterator[Any]) -> Iterator[Any]:
    """The batches of ``iterator``, each handed out after the next one was drawn, as accelerate's ``DataLoaderShard``
    that transformers.Trainer trains from. A collator drawing from the global RNG (masked language modelling) and
    the model's dropout then take their random numbers in transformers' order, so the losses are the same. Used for
    loaders with a length: for one without, Lightning's own fetcher already draws one batch ahead."""
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current
        current = following
    yield current


def _has_len(obj: Any) -> bool:
    try:
        len(obj)
    except TypeError:
        return False
    return True


def window_of(batch: Any) -> WindowInfo | None:
    """The `WindowInfo` a batch carries (None when it did not come through `TrainLoader`), the batch untouched."""
    if isinstance(batch, WindowedBatch):
        return batch.window
    return batch.get(WINDOW_KEY) if isinstance(batch, dict) else None


def split_window(batch: Any) -> tuple[Any, WindowInfo | None]:
    """Separates a batch from its `WindowInfo` (None when it did not come through `TrainLoader`)."""
    if isinstance(batch, WindowedBatch):
        return batch.batch, batch.window
    if isinstance(batch, dict) and WINDOW_KEY in batch:
        batch = dict(batch)
        return batch, batch.pop(WINDOW_KEY)
    return batch, None
