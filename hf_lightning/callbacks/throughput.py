"""HFThroughputMonitor: Lightning's ThroughputMonitor for HF-style dict batches, usable from yaml.

Lightning's `ThroughputMonitor` does the measuring, windowing, world-size scaling and MFU (when the module has
``flops_per_batch``); it only needs to be told how to read a batch, which yaml cannot express as a lambda. This
subclass reads HFDataModule batches (dicts, with or without the accumulation-window wrapper): samples are the first
dimension of the first tensor, lengths the element count of the main input (padded tokens, so no host sync).
It logs ``train/samples_per_sec``, ``train/batches_per_sec``, ``train/items_per_sec`` (tokens) ... every
``trainer.log_every_n_steps``; ``include_num_input_tokens_seen`` (HFFlow) gives HF's exact token count instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.callbacks import ThroughputMonitor

from hf_lightning.data.loader import split_window


def _first_tensor(inputs: Any) -> torch.Tensor:
    values = inputs.values() if isinstance(inputs, Mapping) else inputs if isinstance(inputs, (list, tuple)) else [inputs]
    for value in values:
        if torch.is_tensor(value) and value.dim() > 0:
            return value
    raise TypeError(f"HFThroughputMonitor found no batched tensor in a batch of type {type(inputs).__name__}.")


class HFThroughputMonitor(ThroughputMonitor):
    """`lightning.pytorch.callbacks.ThroughputMonitor` that understands HF-style dict batches.

    Args:
        input_key: The batch key whose element count is a batch's length in tokens (None: no token throughput).
        window_size: Number of batches the rates are averaged over (Lightning's ``Throughput`` window).
        separator: Between the stage and the metric name in the logged keys.
    """

    def __init__(self, input_key: str | None = "input_ids", window_size: int = 100, separator: str = "/") -> None:
        super().__init__(batch_size_fn=self._batch_size, length_fn=self._length if input_key else None,
                         window_size=window_size, separator=separator)
        self.input_key = input_key

    @staticmethod
    def _batch_size(batch: Any) -> int:
        return int(_first_tensor(split_window(batch)[0]).shape[0])

    def _length(self, batch: Any) -> int:
        inputs = split_window(batch)[0]
        if not isinstance(inputs, Mapping) or self.input_key not in inputs:
            raise KeyError(f"HFThroughputMonitor(input_key='{self.input_key}') is not in the batch "
                           f"({sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__}): set "
                           "input_key to the model's main input, or null to count samples only.")
        return int(inputs[self.input_key].numel())


__all__ = ["HFThroughputMonitor"]
