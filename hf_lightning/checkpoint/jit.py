"""A SIGTERM seen during training, for transformers' ``enable_jit_checkpoint`` (`HFCheckpoint` acts on it).

The handler only records the signal; the checkpoint callback asks at the end of each optimizer step, saves a
checkpoint and stops training there, so the run ends cleanly with a complete folder to resume from. With several
processes the answer is agreed across ranks (one boolean all-reduce per optimizer step, only with the option on): a
signal delivered to any rank stops every rank at the same step, and every rank takes part in the save.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


class SigtermRequest:
    """Records SIGTERM while installed; the handler that was there before comes back on `uninstall`."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (a notebook's worker thread: no JIT)
        self._previous = signal.signal(signal.SIGTERM, self._handler)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def agreed(self, strategy: Any) -> bool:
        """Whether any rank saw SIGTERM (a collective with several processes: call it on every rank)."""
        if strategy is None or getattr(strategy, "world_size", 1) <= 1:
            return self.requested
        return bool(strategy.reduce_boolean_decision(self.requested, all=False))
