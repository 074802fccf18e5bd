"""Lightning callbacks, one per file, each owning its configuration and state."""

from hf_lightning.callbacks.checkpoint import HFCheckpoint
from hf_lightning.callbacks.early_stopping import HFEarlyStopping
from hf_lightning.callbacks.grad_monitor import GradientMonitor
from hf_lightning.callbacks.hf_flow import HFFlow, find_flow, wrap_trainer_callbacks
from hf_lightning.callbacks.throughput import HFThroughputMonitor
from hf_lightning.callbacks.warmup import Warmup

__all__ = [
    "GradientMonitor", "HFCheckpoint", "HFEarlyStopping", "HFFlow", "HFThroughputMonitor", "Warmup", "find_flow",
    "wrap_trainer_callbacks",
]
