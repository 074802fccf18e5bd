"""HFThroughputMonitor: Lightning's ThroughputMonitor for HF-style dict batches, usable from yaml.

Lightning's `ThroughputMonitor` does the measuring, windowing, world-size scaling and MFU (when the module has
``flops_per_batch``); it only needs to be told how to read a batch, which yaml cannot express as a lambda. This
subclass reads HFDataModule batches (dicts, with or without the accumulation-window wrapper): samples are the first
dimension of the first tensor, lengths the element count of the main input (padded tokens, so no host sync).
It logs ``train/samples_per_sec``, ``train/batches_per_sec``, ``train/items_per_sec`` (tokens) ... every
``trainer.log_every_n_steps``. `count_input_tokens` is HF's exact token count (``include_num_input_tokens_seen``),
used by HFFlow for ``state.num_input_tokens_seen``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.callbacks import ThroughputMonitor

from hf_lightning.data.loader import split_window


def count_input_tokens(inputs: Any, mode: str, main_input_name: str = "input_ids",
                       pad_token_id: int | None = None) -> torch.Tensor | int:
    """HF's ``Trainer._track_num_input_tokens`` for one micro-batch, before the cross-rank sum.

    Args:
        inputs: The model inputs (a dict).
        mode: ``all`` (every element of the main input) or ``non_padding`` (the attention mask's sum, else the
            elements that are not ``pad_token_id``, else all).
        main_input_name: The model's ``main_input_name``.
        pad_token_id: The tokenizer's pad id.

    Returns:
        The count: an int, or a device tensor (no host sync) for ``non_padding``.
    """
    if not isinstance(inputs, Mapping) or main_input_name not in inputs:
        found = sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__
        raise ValueError(f"include_num_input_tokens_seen needs the model's main input '{main_input_name}' in the batch "
                         f"(found {found}): set the model's `main_input_name`, or include_num_input_tokens_seen='no'.")
    tokens = inputs[main_input_name]
    if mode == "non_padding" and "attention_mask" in inputs:
        return inputs["attention_mask"].sum()
    if mode == "non_padding" and pad_token_id is not None:
        return (tokens != pad_token_id).sum()
    return tokens.numel()


def _first_tensor(inputs: Any) -> torch.Tensor:
    values = inputs.values() if isinstance(inputs, Mapping) else inputs if isinstance(inputs, (list, tuple)) \
        else [inputs]
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


__all__ = ["HFThroughputMonitor", "count_input_tokens"]
