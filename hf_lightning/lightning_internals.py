"""Every use of Lightning internals (loop objects and private attributes) in one place, each with the reason.

transformers.Trainer validates at given optimizer steps, ends an epoch early on request and resumes at a batch inside an
epoch; Lightning has no public hook for these. The functions below are the only code that touches Lightning's loop
internals; `tests/unit/test_lightning_internals.py` checks each attribute against the installed Lightning, so a
release that moves one fails there, loudly, instead of silently changing an evaluation schedule or a resume. This is
why ``lightning`` is capped below the next minor release in ``pyproject.toml``.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any

import lightning as L


def _epoch_loop(trainer: L.Trainer) -> Any:
    return trainer.fit_loop.epoch_loop


def after_fit_loop(trainer: L.Trainer, action: Any) -> None:
    """Calls ``action()`` when the fit loop's ``run`` returns, before Lightning tears the trainer down (``on_fit_end``
    comes after the teardown: the model is back on the CPU and the processes' wrappers are gone). A resume of a
    finished run makes ``run`` return at once (``fit_loop.skip``) without ``on_train_start`` / ``on_train_end``; the
    action ends training there as transformers does. The loop's ``run`` is replaced once per trainer."""
    loop = trainer.fit_loop
    if getattr(loop, "_hf_after_run", None) is not None:
        loop._hf_after_run = action
        return
    original = loop.run

    def run() -> Any:
        result = original()
        loop._hf_after_run()
        return result

    loop._hf_after_run = action
    loop.run = run


def fit_loop_done(trainer: L.Trainer) -> bool:
    """Whether the fit loop has nothing left to run (max_steps or max_epochs reached)."""
    return bool(trainer.fit_loop.done)


def take_over_validation_schedule(trainer: L.Trainer) -> None:
    """Stops Lightning from validating on its own schedule (``val_check_interval``): `HFFlow` runs the validation
    loop at transformers' points with `validate_now`. The epoch loop's private ``_should_check_val_fx`` decides."""
    loop = _epoch_loop(trainer)
    if not hasattr(loop, "_should_check_val_fx"):
        raise RuntimeError("This Lightning release has no fit_loop.epoch_loop._should_check_val_fx, which hf_lightning "
                           "replaces to validate at transformers' points: install lightning<2.7.")
    loop._should_check_val_fx = lambda data_fetcher: False


def validate_now(trainer: L.Trainer, fresh_loaders: bool = False) -> None:
    """Runs Lightning's validation loop inside the training epoch, as its epoch loop does when it validates (the
    validating / training flags around the run), keeping the logger connector's first-iteration flag, which the
    extra run would otherwise reset (and with it the step logging of the epoch). ``fresh_loaders``: the loop asks the
    data module for its loaders again (Lightning keeps those of the first validation of a fit)."""
    first_loop_iter = trainer._logger_connector._first_loop_iter
    trainer.validating = True
    loop = _epoch_loop(trainer).val_loop
    if fresh_loaders:
        loop._combined_loader = None
    loop.run()
    trainer.training = True
    trainer._logger_connector._first_loop_iter = first_loop_iter


def is_last_batch(trainer: L.Trainer) -> bool:
    """Whether the batch that just ran is the epoch's last (the epoch loop's batch progress)."""
    return bool(_epoch_loop(trainer).batch_progress.is_last_batch)


def end_epoch_after_this_batch(trainer: L.Trainer) -> None:
    """Makes the epoch loop end the epoch at the current batch (transformers' ``should_epoch_stop``)."""
    _epoch_loop(trainer).batch_progress.is_last_batch = True


def restarted_mid_epoch(trainer: L.Trainer) -> bool:
    """Whether the fit resumed inside an epoch (Lightning then skips ``on_train_epoch_start``)."""
    return bool(trainer.fit_loop.restarted_mid_epoch)


def batches_done_in_epoch(trainer: L.Trainer) -> int:
    """Batches of the current epoch that a resumed fit already ran (the ones its loader must skip)."""
    return int(_epoch_loop(trainer).batch_progress.current.ready)


def fit_loop_state(trainer: L.Trainer) -> dict[str, Any]:
    """The fit loop's progress as Lightning saves it in a ``.ckpt`` (the template a resume fills in)."""
    return trainer.fit_loop.state_dict()


def load_fit_loop_state(trainer: L.Trainer, state: dict[str, Any]) -> None:
    """Loads a filled-in fit loop progress (before ``fit_loop.run``), as Lightning does from a ``.ckpt``."""
    trainer.fit_loop.load_state_dict(state)


def set_up_training_data(trainer: L.Trainer) -> None:
    """Builds the training data loader now, as the fit loop does at its start (a resume needs the batch count
    before that)."""
    trainer.fit_loop.setup_data()


def restart_training_iterator(trainer: L.Trainer) -> None:
    """Creates the training iterator again. ``fit_loop.setup_data`` creates it, and for a loader without a length (an
    iterable data set) its fetcher draws the first batch ahead right away; Lightning has no public hook between the
    loader's creation and that draw, so a resume that tells the loader to skip the trained batches makes the
    iterator again afterwards (the batch read ahead is dropped, nothing else was consumed)."""
    fetcher = trainer.fit_loop._data_fetcher
    if fetcher is not None:
        iter(fetcher)


#: Lightning 2.6's ``_tree_flatten`` (its CombinedLoader, in every loop of either door) builds a ``LeafSpec``, which
#: newer torch deprecates with a FutureWarning; a matter of the two versions, not of the user's code.
_LEAFSPEC_DEPRECATION = {"message": r"`isinstance\(treespec, LeafSpec\)` is deprecated", "category": FutureWarning,
                         "module": r"lightning\.pytorch\.utilities\._pytree"}


def ignore_lightning_version_warnings() -> None:
    """Hides the LeafSpec deprecation that Lightning's own code triggers (exactly that message, from that module).
    Installed once at import; called again where a run starts, in case the filters were reset since (as pytest does)."""
    pattern = _LEAFSPEC_DEPRECATION["message"]
    if not any(action == "ignore" and message is not None and message.pattern == pattern
               for action, message, *_ in warnings.filters):
        warnings.filterwarnings("ignore", **_LEAFSPEC_DEPRECATION)


ignore_lightning_version_warnings()


#: Lightning's advice on its loaders' workers (more workers on a machine with many cores, persistent ones with the
#: spawn start method): the HF-style Trainer's loaders follow the ``dataloader_*`` arguments, and transformers gives
#: no such advice.
_LOADER_ADVICE = (r"The '\w+' does not have many workers", r"Consider setting `persistent_workers=True`")


@contextlib.contextmanager
def quiet_lightning() -> Any:
    """Lightning's own info lines ("GPU available", tips, "`Trainer.fit` stopped") off while the HF-style Trainer
    builds and runs its Lightning trainers: transformers.Trainer prints none of them. Warnings still show, but for
    those of Lightning's own that transformers has no counterpart of, hidden here exactly: "Total length of `list`
    across ranks is zero" (the data module's empty list of validation loaders, Lightning's way to run no validation,
    when there is no eval set), the advice on loader workers (`_LOADER_ADVICE`) and the LeafSpec deprecation
    (`ignore_lightning_version_warnings`).
    """
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero", category=UserWarning)
            for advice in _LOADER_ADVICE:
                warnings.filterwarnings("ignore", message=advice)
            ignore_lightning_version_warnings()
            yield
    finally:
        logger.setLevel(level)
