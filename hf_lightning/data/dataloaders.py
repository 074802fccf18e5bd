"""The DataLoaders of `HFDataModule`: collation, HF's per-epoch sample order sharded over ranks, accumulation windows
for training, and contiguous per-rank blocks for evaluation. A mixin of `HFDataModule`, which provides ``split``,
``raw_splits``, ``validation_roles``, ``attached_module``, ``resolve_tokenizer``, ``role_collate_fn``, the batch and
order settings (``batch_size``, ``sampling_strategy``...) and ``loader`` (`LoaderSettings`: workers, pinning,
``drop_last``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler, SequentialSampler
from transformers.trainer_pt_utils import BatchRebalanceSampler
from transformers.trainer_utils import seed_worker

from hf_lightning import progress
from hf_lightning.data.collators import build_collator
from hf_lightning.data.loader import (
    EpochDataLoader,
    HFBatchSampler,
    HFRandomSampler,
    KeptWorkersDataLoader,
    TrainLoader,
    count_label_items,
)
from hf_lightning.data.samplers import (
    DispatchedShard,
    RebalancedBatches,
    SeededLengthGroupedSampler,
    ShardedSequentialSampler,
)


class DataLoaders:
    """The train / validation / test / predict DataLoaders of `HFDataModule`, built the way transformers.Trainer's
    are."""

    @property
    def collate_fn(self) -> Callable[..., Any]:
        if self._collate is None:
            kwargs = dict(self.collator_kwargs)
            if self.collator in (None, "padding") and self.pad_to_multiple_of:
                kwargs.setdefault("pad_to_multiple_of", self.pad_to_multiple_of)
            self._collate = build_collator(self.collator, self.resolve_tokenizer(), **kwargs)
        return self._collate

    def _world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def _loader_kwargs(self, role: str) -> dict[str, Any]:
        loader = self.loader
        kwargs: dict[str, Any] = {"collate_fn": self.role_collate_fn(role), "num_workers": loader.num_workers,
                                  "pin_memory": loader.pin_memory and torch.cuda.is_available()}
        if loader.num_workers > 0:
            kwargs.update(persistent_workers=loader.persistent_workers, prefetch_factor=loader.prefetch_factor,
                          multiprocessing_context=loader.multiprocessing_context, in_order=loader.in_order)
        return kwargs

    def train_sampler(self, ds: Any) -> Sampler[int]:
        """The epoch order: HF's seeded random permutation, sequential, or length-grouped."""
        seed = self.data_seed if self.data_seed is not None else self.seed
        if self.sampling_strategy == "sequential":
            return SequentialSampler(ds)
        if self.sampling_strategy == "group_by_length":
            lengths, name = self._lengths(ds)
            return SeededLengthGroupedSampler(self.batch_size * self._world()[0], ds, lengths, seed,
                                              model_input_name=name)
        return HFRandomSampler(len(ds), seed)

    def _lengths(self, ds: Any) -> tuple[list[int] | None, str | None]:
        """(the data set's column of lengths where it has one (a datasets.Dataset), else None; the name of the items'
        main input, whose lengths are measured then: the processing class's first model input), as transformers."""
        columns = getattr(ds, "column_names", None) or ()
        lengths = ds[self.length_column_name] if self.length_column_name in columns else None
        names = getattr(self.resolve_tokenizer(), "model_input_names", None)
        return lengths, (names[0] if names else None)

    def _rebalanced_batches(self, ds: Any, world: int, rank: int) -> RebalancedBatches:
        """``train_sampling_strategy="batch_rebalance"``: transformers' ``BatchRebalanceSampler`` over the lengths,
        one optimizer step's samples (batch x accumulation x processes) at a time, seeded as transformers seeds it."""
        lengths, name = self._lengths(ds)
        if lengths is None:
            name = name or "input_ids"
            if not isinstance(ds[0], Mapping) or name not in ds[0]:
                raise ValueError("Can only automatically infer lengths for datasets whose items are dictionaries with "
                                 f"an '{name}' key.")
            lengths = [len(item[name]) for item in ds]
        elif torch.is_tensor(lengths):
            lengths = lengths.tolist()
        accumulate = self.trainer.accumulate_grad_batches if self.trainer is not None else 1
        return RebalancedBatches(BatchRebalanceSampler(
            lengths=lengths, effective_batch_size=self.batch_size * accumulate * world, dp_size=world,
            grad_accum=accumulate, rank=rank, drop_last=self.loader.drop_last))

    def train_loader(self) -> DataLoader:
        """The per-rank micro-batch DataLoader (HF order; ranks shard one permutation)."""
        ds = self.split("train")
        world, rank = self._world()
        if isinstance(ds, IterableDataset):  # as transformers: drop_last cuts batches of a sampler, not of a stream
            if world > 1:  # each process its share of every global batch, as accelerate dispatches a stream
                ds = DispatchedShard(ds, self.batch_size, world, rank, pad=True)
            return DataLoader(ds, batch_size=self.batch_size, **self._loader_kwargs("train"))
        if self.sampling_strategy == "batch_rebalance":
            batches: Sampler[list[int]] = self._rebalanced_batches(ds, world, rank)
        else:
            batches = HFBatchSampler(self.train_sampler(ds), self.batch_size, self.loader.drop_last, world, rank)
        # As transformers: each worker of a map-style training set reseeds python's, numpy's and torch's random
        # streams from its torch seed (and the rank), so augmentations drawing from ``random`` / ``numpy`` match.
        seeding = partial(seed_worker, num_workers=self.loader.num_workers, rank=rank)
        return EpochDataLoader(ds, batch_sampler=batches, worker_init_fn=seeding, **self._loader_kwargs("train"))

    def wrap_train_loader(self, loader: Any) -> TrainLoader:
        """Groups a loader's batches into accumulation windows tagged with their label counts."""
        accumulate = self.trainer.accumulate_grad_batches if self.trainer is not None else 1
        module = self.attached_module()
        shift = bool(getattr(module, "loss_shifts_labels", False))
        return TrainLoader(loader, accumulate, lambda b: count_label_items(b, shift_labels=shift),
                           epoch=lambda: self.trainer.current_epoch if self.trainer is not None else 0)

    def train_dataloader(self) -> Any:
        return self.wrap_train_loader(self.train_loader())

    def _eval_loader(self, role: str) -> DataLoader:
        ds = self.split(role)
        if self.loader.persistent_workers and self.loader.num_workers > 0 and role != "predict":
            # As transformers: one loader per evaluation set, kept, so that its workers live from one evaluation to
            # the next (and go on with their random streams: a random collator draws as in transformers).
            source = self.raw_splits().get(role, ds)
            key = (role.split("/")[0], id(source), self.eval_batch_size, self.loader, id(self.collator))
            kept = self.kept_eval_loaders
            if key not in kept or kept[key][0] is not source:
                kept[key] = (source, self._new_eval_loader(ds, role, KeptWorkersDataLoader))
            return kept[key][1]
        return self._new_eval_loader(ds, role)

    @property
    def kept_eval_loaders(self) -> dict[Any, Any]:
        """The evaluation loaders kept with their workers: this data module's (an HF-style Trainer shares one dict
        among the data modules it builds, so ``evaluate()`` after ``train()`` goes on with training's loader)."""
        return self.__dict__.setdefault("_kept_eval_loaders", {})

    def _new_eval_loader(self, ds: Any, role: str, loader_class: type[DataLoader] = DataLoader) -> DataLoader:
        world, rank = self._world()
        if isinstance(ds, IterableDataset):
            if world > 1:  # each sample evaluated once; the gathered outputs come back in the stream's order
                ds = DispatchedShard(ds, self.eval_batch_size, world, rank, pad=False)
            return loader_class(ds, batch_size=self.eval_batch_size, **self._loader_kwargs(role))
        count = len(ds)
        if self.loader.drop_last:  # as transformers (dataloader_drop_last applies to its evaluation loaders too)
            count = progress.batches_per_epoch(count, self.eval_batch_size * world, True) * self.eval_batch_size * world
        return loader_class(ds, batch_size=self.eval_batch_size, sampler=self.eval_sampler(ds, count, world, rank),
                            **self._loader_kwargs(role))

    def eval_sampler(self, ds: Any, count: int, world: int, rank: int) -> Sampler[int] | None:
        """The evaluation order: this rank's contiguous block of the first ``count`` samples."""
        return ShardedSequentialSampler(count, world, rank)

    def val_dataloader(self) -> DataLoader | dict[str, DataLoader] | list:
        """The validation loader, or ``{name: loader}`` for several sets (Lightning runs them in turn; the module
        names each set's metrics from the keys)."""
        roles = self.validation_roles()
        fitting = self.trainer is not None and self.trainer.state.fn == "fit"
        if fitting and not any(role in self.raw_splits() for role in roles):
            return []  # no validation split: fit runs without evaluation (validate() still raises clearly)
        if self.validation_sets is None:
            return self._eval_loader("validation")
        return {name: self._eval_loader(role) for name, role in zip(self.validation_sets, roles)}

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")
