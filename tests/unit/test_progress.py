"""transformers.Trainer's steps-and-epochs arithmetic (hf_lightning/progress.py), against transformers' own numbers."""

from __future__ import annotations

import math

import pytest

from hf_lightning import progress


@pytest.mark.parametrize(("samples", "batch", "drop_last", "expected"), [(10, 3, False, 4), (10, 3, True, 3),
                                                                        (9, 3, False, 3), (2, 8, False, 1)])
def test_batches_per_epoch(samples: int, batch: int, drop_last: bool, expected: int) -> None:
    assert progress.batches_per_epoch(samples, batch, drop_last) == expected


def test_updates_epochs_and_positions() -> None:
    # transformers: num_update_steps_per_epoch = max(len_dataloader // GA + int(len % GA > 0), 1)
    for batches in range(12):
        for ga in (1, 2, 3, 5):
            hf = max(batches // ga + int(batches % ga > 0), 1)
            assert progress.updates_per_epoch(batches, ga) == hf
    assert progress.total_updates(2.5, 4) == 10 and progress.total_updates(0.3, 7) == 3  # ceil(epochs x updates)
    assert progress.epochs_for(10, 4) == 3
    assert progress.position(9, 8, 2) == (2, 1)  # 4 updates per epoch: step 9 is 1 step into epoch 2
    assert progress.position(9, math.inf, 2) == (0, 9)  # an iterable data set: one endless epoch
