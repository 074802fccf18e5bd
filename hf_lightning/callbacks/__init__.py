"""Lightning callbacks, one per file, each owning its configuration and state."""

from hf_lightning.callbacks.hf_flow import HFFlow, find_flow

__all__ = ["HFFlow", "find_flow"]
