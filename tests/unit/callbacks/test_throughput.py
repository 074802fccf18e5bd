"""HFThroughputMonitor (hf_lightning/callbacks/throughput.py): Lightning's throughput metrics from dict batches."""

from __future__ import annotations

from hf_lightning.callbacks.throughput import HFThroughputMonitor
from tests.unit.callbacks.helpers import MemoryLogger, fit


def test_throughput_monitor_reads_dict_batches() -> None:
    logger = MemoryLogger()
    fit([HFThroughputMonitor(input_key="input_x", window_size=2)], logger=logger, max_steps=6,
        log_every_n_steps=2)
    keys = set().union(*(metrics for _, metrics in logger.records))
    # Lightning's names (one device: "device/"; several: also the global rates); items are input_x elements.
    assert {"train/device/samples_per_sec", "train/device/items_per_sec", "train/device/batches_per_sec"} <= keys
    assert ("train/samples", 48) in {(k, v) for _, metrics in logger.records for k, v in metrics.items()}
