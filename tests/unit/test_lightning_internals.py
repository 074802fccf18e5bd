"""The Lightning internals hf_lightning relies on (hf_lightning/lightning_internals.py) exist in the installed release.

Each check names the attribute and what depends on it, so a Lightning upgrade that moves one fails here, not as a
silently shifted evaluation schedule or an inexact resume elsewhere.
"""

from __future__ import annotations

import lightning as L
import pytest

from hf_lightning import lightning_internals as internals


@pytest.fixture()
def trainer() -> L.Trainer:
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_steps=1)


def test_the_epoch_loop_pieces_used_for_transformers_evaluation_points(trainer):
    loop = trainer.fit_loop.epoch_loop
    assert callable(loop._should_check_val_fx), "validation schedule (take_over_validation_schedule)"
    assert hasattr(loop.val_loop, "run"), "validation at a given step (validate_now)"
    assert hasattr(trainer._logger_connector, "_first_loop_iter"), "logger state kept across it (validate_now)"
    assert isinstance(loop.batch_progress.is_last_batch, bool), "epoch end / should_epoch_stop"
    internals.take_over_validation_schedule(trainer)
    assert loop._should_check_val_fx(None) is False
    internals.end_epoch_after_this_batch(trainer)
    assert internals.is_last_batch(trainer)


def test_the_fit_loop_pieces_used_for_exact_resume(trainer):
    assert internals.restarted_mid_epoch(trainer) is False and internals.batches_done_in_epoch(trainer) == 0
    assert callable(trainer.fit_loop.setup_data), "batch count before the loop starts (set_up_training_data)"
    assert hasattr(trainer.fit_loop, "_data_fetcher"), "the iterator made again after a skip (restart_training_iterator)"
    state = internals.fit_loop_state(trainer)
    # the keys hf_lightning.checkpoint.resume.lightning_loop_state fills in
    for key in ("epoch_loop.batch_progress", "epoch_loop.scheduler_progress",
                "epoch_loop.automatic_optimization.optim_progress", "epoch_loop.state_dict", "epoch_progress"):
        assert key in state, key
    assert "is_last_batch" in state["epoch_loop.batch_progress"]
    assert {"step", "zero_grad"} <= set(state["epoch_loop.automatic_optimization.optim_progress"]["optimizer"])
    internals.load_fit_loop_state(trainer, state)  # accepted back as it came


def test_the_fit_loop_pieces_used_to_end_a_finished_run(trainer):
    """A resume of a finished run: Lightning's fit loop returns at once (skip), before its teardown; the action
    installed by after_fit_loop then ends training as transformers does (HFFlow._end_a_finished_fit)."""
    assert callable(trainer.fit_loop.run) and isinstance(type(trainer.fit_loop).done, property)
    assert hasattr(type(trainer.fit_loop), "skip"), "the early return of a finished fit"
    calls = []
    original = trainer.fit_loop.run
    trainer.fit_loop.run = lambda: calls.append("run")
    internals.after_fit_loop(trainer, lambda: calls.append("first action"))
    internals.after_fit_loop(trainer, lambda: calls.append("second action"))  # replaces the action, not the wrapper
    trainer.fit_loop.run()
    assert calls == ["run", "second action"]
    trainer.fit_loop.run = original
