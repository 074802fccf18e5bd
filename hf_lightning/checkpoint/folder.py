"""The checkpoint folder of ``transformers.Trainer``: names, crash-safe writing, safe reading, rotation.

A folder ``output_dir/checkpoint-{global_step}/`` holds exactly what transformers 5.x writes (``model.safetensors`` +
``config.json`` or a plain ``model.safetensors``, tokenizer files, ``optimizer.pt``, ``scheduler.pt``, ``scaler.pt``
with fp16, ``rng_state.pth`` / ``rng_state_{rank}.pth``, ``trainer_state.json``, ``training_args.bin``) plus a readable
``training_args.json``. Each file is first written into a hidden staging folder ``.tmp-checkpoint-{step}``, flushed to
disk (fsync), and the folder is renamed into place only when complete: a ``checkpoint-*`` folder is never half-written,
and the names transformers looks for (``get_last_checkpoint``, ``sort_checkpoints``) never match a staging folder.

Reading never unpickles code: tensors come from safetensors, and ``optimizer.pt`` / ``scheduler.pt`` / ``scaler.pt`` /
``rng_state*.pth`` go through ``torch.load(weights_only=True)``. ``training_args.bin`` (a pickle, as transformers
writes it) is never loaded.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, TrainerState, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME, TRAINING_ARGS_NAME
from transformers.trainer_pt_utils import safe_globals, set_rng_state_for_device
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints
from transformers.utils import (
    ADAPTER_SAFE_WEIGHTS_NAME,
    ADAPTER_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
)
from transformers.utils import logging as hf_logging

# transformers.Trainer's messages under its logger: log_level / transformers.logging.set_verbosity_* control them
log = hf_logging.get_logger("transformers.trainer")

#: The readable copy of ``training_args.bin`` written beside it.
TRAINING_ARGS_JSON = "training_args.json"
#: Prefix of the staging folder a checkpoint is written into before it is renamed into place.
STAGING_PREFIX = ".tmp-"
_REPLACED_PREFIX = ".old-"
_DELETED_PREFIX = ".deleted-"  # a checkpoint being removed by rotation
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")  # transformers' own pattern
#: peft's adapter files (a ``PeftModel``'s checkpoint holds only them, as transformers.Trainer writes it)
ADAPTER_WEIGHT_FILES = (ADAPTER_SAFE_WEIGHTS_NAME, ADAPTER_WEIGHTS_NAME)
_WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME, *ADAPTER_WEIGHT_FILES)


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is peft's ``PeftModel`` (False when peft is not installed)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def has_adapter_weights(folder: str) -> bool:
    """Whether ``folder`` is a peft adapter folder (``adapter_model.safetensors`` / ``.bin``)."""
    return any(os.path.isfile(os.path.join(folder, f)) for f in ADAPTER_WEIGHT_FILES)


def adapter_subdirs(folder: str) -> list[str]:
    """The sub-folders of ``folder`` holding an adapter each: peft saves an adapter not named ``default`` (and, with
    several adapters, every one but ``default``) in a sub-folder of its name."""
    if not os.path.isdir(folder):
        return []
    return [name for name in sorted(os.listdir(folder)) if has_adapter_weights(os.path.join(folder, name))]


def checkpoint_dir(output_dir: str, global_step: int) -> str:
    """``output_dir/checkpoint-{global_step}``, spelled as transformers spells it (``PREFIX_CHECKPOINT_DIR``)."""
    return os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{global_step}")


def staging_dir(final_dir: str) -> str:
    """The hidden folder a checkpoint is written into before being renamed to ``final_dir``."""
    parent, name = os.path.split(final_dir)
    return os.path.join(parent, STAGING_PREFIX + name)


def has_weights(folder: str) -> bool:
    """Whether ``folder`` holds model weights in one of the layouts transformers writes (a peft model's adapters at
    the top or in sub-folders)."""
    return os.path.isdir(folder) and (any(os.path.isfile(os.path.join(folder, f)) for f in _WEIGHT_FILES)
                                      or bool(adapter_subdirs(folder)))


def is_complete(folder: str) -> bool:
    """A usable checkpoint: weights and ``trainer_state.json`` (transformers writes the state file last)."""
    return has_weights(folder) and os.path.isfile(os.path.join(folder, TRAINER_STATE_NAME))


def resolve_checkpoint(output_dir: str, resume_from_checkpoint: str | bool | None) -> str | None:
    """The checkpoint folder ``Trainer.train(resume_from_checkpoint=...)`` means, with transformers' errors.

    Args:
        output_dir: The run's output folder (searched when ``resume_from_checkpoint`` is True).
        resume_from_checkpoint: A checkpoint folder, True for the newest complete ``checkpoint-*`` in ``output_dir``,
            or None / False for no resume.

    Returns:
        The folder to resume from, or None.

    Raises:
        ValueError: "No valid checkpoint found in output directory (...)" or "Can't find a valid checkpoint at ...".
    """
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if resume_from_checkpoint is True:
        found = _newest_complete(output_dir)
        if found is None:
            raise ValueError(f"No valid checkpoint found in output directory ({output_dir})")
        return found
    path = os.fspath(resume_from_checkpoint)
    if not has_weights(path):
        raise ValueError(f"Can't find a valid checkpoint at {path}")
    return path


def _newest_complete(output_dir: str) -> str | None:
    # As transformers' get_last_checkpoint (the highest checkpoint-<step>, joined to output_dir), but a folder a crash
    # left incomplete (possible with transformers.Trainer's folders, never with ours) is skipped.
    if not os.path.isdir(output_dir):
        return None
    steps = sorted((int(m.group(1)), name) for name in os.listdir(output_dir)
                   if (m := _CHECKPOINT_NAME.match(name)) and os.path.isdir(os.path.join(output_dir, name)))
    for rank, (_, name) in enumerate(reversed(steps)):
        path = os.path.join(output_dir, name)
        if is_complete(path):
            if rank:
                log.warning(f"Skipping incomplete checkpoint folder(s) newer than {path}.")
            return path
    return None


# --------------------------------------------------------------------------------------------------- writing
def fsync_path(path: str) -> None:
    """Flushes a file or a folder entry to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _walk_files(folder: str) -> Iterator[str]:
    for root, _, files in os.walk(folder):
        for name in files:
            yield os.path.join(root, name)


def start_staging(final_dir: str) -> str:
    """Creates an empty staging folder for ``final_dir`` (removing one a crash left behind) and returns it."""
    staging = staging_dir(final_dir)
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    return staging


def publish(staging: str, final_dir: str) -> None:
    """Flushes every file of ``staging`` to disk, then renames it to ``final_dir`` (atomic on POSIX file systems).

    An existing ``final_dir`` (the same step saved again) is moved aside first and removed only once the new folder is
    in place.
    """
    for path in _walk_files(staging):
        fsync_path(path)
    fsync_path(staging)
    replaced = None
    if os.path.exists(final_dir):
        parent, name = os.path.split(final_dir)
        replaced = os.path.join(parent, _REPLACED_PREFIX + name)
        shutil.rmtree(replaced, ignore_errors=True)
        os.rename(final_dir, replaced)
    os.rename(staging, final_dir)
    fsync_path(os.path.dirname(final_dir) or ".")
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def recover_output_dir(output_dir: str) -> None:
    """Cleans what a crash during a save left in ``output_dir``: staging folders are removed; a replaced folder whose
    successor never appeared is put back."""
    if not os.path.isdir(output_dir):
        return
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(_REPLACED_PREFIX + PREFIX_CHECKPOINT_DIR):
            final = os.path.join(output_dir, name[len(_REPLACED_PREFIX):])
            if os.path.exists(final):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.rename(path, final)
        elif name.startswith(_DELETED_PREFIX + PREFIX_CHECKPOINT_DIR):  # a rotation the crash interrupted
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(STAGING_PREFIX + PREFIX_CHECKPOINT_DIR):
            log.info(f"Removing {path}, a checkpoint a previous run did not finish writing.")
            shutil.rmtree(path, ignore_errors=True)


def save_model_files(model: nn.Module, folder: str, state_dict: dict[str, torch.Tensor], tokenizer: Any = None) -> None:
    """The model part of a checkpoint, as transformers' ``Trainer._save`` writes it.

    A ``PreTrainedModel`` goes through ``save_pretrained`` (``config.json`` + ``model.safetensors``, tied weights
    dropped); a peft ``PeftModel`` too (the adapter folder: ``adapter_config.json`` + ``adapter_model.safetensors``,
    the adapters and ``modules_to_save`` taken from the state dict given); any other module's ``state_dict`` is
    written with safetensors. The tokenizer (if any) is saved beside it.
    """
    if isinstance(model, PreTrainedModel) or is_peft_model(model):
        model.save_pretrained(folder, state_dict=state_dict, is_main_process=True)
    else:
        tensors = {k: v.contiguous() for k, v in state_dict.items()}
        save_file(tensors, os.path.join(folder, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def save_torch(obj: Any, path: str) -> None:
    """``torch.save`` of a state dict (optimizer, scheduler, scaler, RNG), as transformers names the files."""
    torch.save(obj, path)


def rng_file_name(rank: int, world_size: int) -> str:
    """``rng_state.pth`` on one process, ``rng_state_{rank}.pth`` with several (transformers' names)."""
    return "rng_state.pth" if world_size <= 1 else f"rng_state_{rank}.pth"


def save_rng_state(folder: str, rank: int, world_size: int) -> None:
    """The random generators' states, with transformers' keys (``python``, ``numpy``, ``cpu``, ``cuda``)."""
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.random.get_rng_state_all() if world_size > 1 else torch.cuda.random.get_rng_state()
    torch.save(states, os.path.join(folder, rng_file_name(rank, world_size)))


def save_trainer_state(state: TrainerState, folder: str) -> None:
    """``trainer_state.json`` through transformers' own ``TrainerState.save_to_json``."""
    state.save_to_json(os.path.join(folder, TRAINER_STATE_NAME))


def save_training_args(args: TrainingArguments, folder: str, readable: bool = True) -> None:
    """``training_args.bin`` (the pickle transformers writes) and, with ``readable``, ``training_args.json`` (no
    unpickling needed).

    hf_lightning's own ``TrainingArguments`` / ``Seq2SeqTrainingArguments`` are pickled as transformers' class of
    the same name with the same values, so ``torch.load(..., weights_only=False)`` reads the file where only
    transformers is installed (an inference or hub machine); a user's own subclass is pickled as it is.
    """
    torch.save(_portable(args), os.path.join(folder, TRAINING_ARGS_NAME))
    if readable:
        with open(os.path.join(folder, TRAINING_ARGS_JSON), "w", encoding="utf-8") as f:
            f.write(args.to_json_string() + "\n")


def _portable(args: TrainingArguments) -> TrainingArguments:
    """``args`` as an instance of its nearest transformers class when its own class is one of hf_lightning's."""
    if not type(args).__module__.startswith("hf_lightning."):
        return args
    base = next(cls for cls in type(args).__mro__ if cls.__module__.startswith("transformers."))
    portable = base.__new__(base)  # no __post_init__: the values were validated when ``args`` was built
    portable.__dict__.update(args.__dict__)
    return portable


def abandon(staging: str) -> None:
    """Removes a staging folder whose save failed (its space is freed; nothing half-written stays behind)."""
    shutil.rmtree(staging, ignore_errors=True)


#: Below this many free bytes, a failed write counts as a full disk (torch.save reports ENOSPC as a RuntimeError).
_NEARLY_FULL = 1 << 20


@dataclasses.dataclass
class SaveFailure:
    """Why a checkpoint write failed on this process: the error, and whether the disk was full at that moment."""

    error: BaseException
    disk_full: bool

    @classmethod
    def of(cls, error: BaseException, folder: str) -> SaveFailure:
        full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        if not full:
            try:
                full = shutil.disk_usage(folder).free < _NEARLY_FULL
            except OSError:
                full = False
        return cls(error, full)


def save_failed(final_dir: str, failure: SaveFailure | None) -> OSError:
    """The error for a checkpoint that could not be written: a full disk says so, and every error names the newest
    complete checkpoint to resume from.

    Args:
        final_dir: The checkpoint folder that was being written.
        failure: This process's failure, or None when another process failed.
    """
    output_dir = os.path.dirname(final_dir)
    newest = _newest_complete(output_dir) if os.path.isdir(output_dir) else None
    kept = (f"the earlier checkpoints are complete (newest: {newest}); resume from it with "
            "resume_from_checkpoint=True" if newest else "no earlier checkpoint exists")
    if failure is None:
        cause, code = "another process failed to write its part (see its error)", errno.EIO
    elif failure.disk_full:
        cause, code = (f"the disk holding {output_dir} is full ({type(failure.error).__name__}: {failure.error}); "
                       "free space or lower save_total_limit"), errno.ENOSPC
    else:
        cause, code = f"{type(failure.error).__name__}: {failure.error}", getattr(failure.error, "errno", errno.EIO)
    return OSError(code, f"Saving {os.path.basename(final_dir)} failed: {cause}. Nothing of it was left in "
                         f"{output_dir}; {kept}.")


# --------------------------------------------------------------------------------------------------- reading
def damaged(path: str, err: BaseException) -> ValueError:
    """The error for a checkpoint file that cannot be read (truncated by a full disk, corrupted on copy): it names the
    file and the checkpoint to resume from instead."""
    checkpoint = os.path.dirname(os.path.abspath(path))
    output_dir = os.path.dirname(checkpoint)
    match = _CHECKPOINT_NAME.match(os.path.basename(checkpoint))
    earlier = []
    if match and os.path.isdir(output_dir):
        step = int(match.group(1))
        earlier = sorted((int(m.group(1)), os.path.join(output_dir, name)) for name in os.listdir(output_dir)
                         if (m := _CHECKPOINT_NAME.match(name)) and int(m.group(1)) < step
                         and is_complete(os.path.join(output_dir, name)))
    hint = (f"resume from the previous checkpoint, {earlier[-1][1]}" if earlier
            else "start without resume_from_checkpoint")
    reason = (str(err).splitlines() or [type(err).__name__])[0]
    return ValueError(f"{path} is damaged and cannot be read ({type(err).__name__}: {reason}). Nothing was trained: "
                      f"{hint}, or delete {checkpoint} so that resume_from_checkpoint=True picks the one before it.")


def load_torch(path: str, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only; never runs code from the file.

    Raises:
        ValueError: The file holds anything else (e.g. a pickle that would execute code), or it is damaged
            (truncated, corrupted), naming the file.
    """
    try:
        with safe_globals():  # transformers' allow-list: numpy arrays of the RNG state
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError / RuntimeError depending on the payload
        if "Weights only load failed" not in str(err):
            raise damaged(path, err) from err
        raise ValueError(
            f"Refusing to load {path}: it is not a plain tensor file (torch.load(weights_only=True) failed: "
            f"{str(err).splitlines()[0]}). Resume only from checkpoints you trust, or delete the file to resume "
            f"without it."
        ) from err


class MissingCheckpointFile(FileNotFoundError, ValueError):
    """A checkpoint folder without a file resuming needs: the ``FileNotFoundError`` transformers raises (caught as
    that), which earlier hf_lightning releases raised as a ``ValueError``."""


def load_trainer_state(folder: str) -> TrainerState:
    """``trainer_state.json`` through transformers' ``TrainerState.load_from_json``."""
    path = os.path.join(folder, TRAINER_STATE_NAME)
    if not os.path.isfile(path):
        raise MissingCheckpointFile(errno.ENOENT, f"No such file or directory, so {folder} is not a checkpoint to "
                                    "resume from", path)
    try:
        return TrainerState.load_from_json(path)
    except (ValueError, TypeError, UnicodeDecodeError) as err:  # json.JSONDecodeError is a ValueError
        raise damaged(path, err) from err


def _load_safetensors(path: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except Exception as err:  # safetensors' SafetensorError: a header or data that ends early
        raise damaged(path, err) from err


def load_weights(folder: str) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint (safetensors preferred; ``pytorch_model.bin`` with ``weights_only=True``)."""
    single = os.path.join(folder, SAFE_WEIGHTS_NAME)
    if os.path.isfile(single):
        return _load_safetensors(single)
    for index_name, safe in ((SAFE_WEIGHTS_INDEX_NAME, True), (WEIGHTS_INDEX_NAME, False)):
        index = os.path.join(folder, index_name)
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            weights: dict[str, torch.Tensor] = {}
            for shard in shards:
                path = os.path.join(folder, shard)
                weights.update(_load_safetensors(path) if safe else load_torch(path))
            return weights
    bin_file = os.path.join(folder, WEIGHTS_NAME)
    if os.path.isfile(bin_file):
        return load_torch(bin_file)
    raise ValueError(f"Can't find a valid checkpoint at {folder}")


def load_rng_state(folder: str, rank: int, world_size: int) -> bool:
    """Restores the random generators saved by `save_rng_state` (or transformers.Trainer); False if absent."""
    path = os.path.join(folder, rng_file_name(rank, world_size))
    if not os.path.isfile(path):  # a checkpoint written with another number of processes: transformers' messages
        log.info(f"Didn't find an RNG file for process {rank}, if you are resuming a training that wasn't launched in "
                 "a distributed fashion, reproducibility is not guaranteed." if world_size > 1 else
                 "Didn't find an RNG file, if you are resuming a training that was launched in a distributed fashion, "
                 "reproducibility is not guaranteed.")
        return False
    states = load_torch(path, map_location=None)
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["cpu"])
    if torch.cuda.is_available() and "cuda" in states:
        set_rng_state_for_device("CUDA", torch.cuda, states, world_size > 1)
    return True


# --------------------------------------------------------------------------------------------------- rotation
def rotate(output_dir: str, save_total_limit: int | None, best_model_checkpoint: str | None) -> None:
    """transformers' ``rotate_checkpoints`` with the arguments ``Trainer._save_checkpoint`` passes (mtime order): the
    oldest folders beyond ``save_total_limit`` go, never the newest nor the best; each one as `remove_checkpoint`
    removes it."""
    if save_total_limit is None or save_total_limit <= 0:
        return
    checkpoints = sort_checkpoints(output_dir=output_dir, use_mtime=True)
    protected = {checkpoints[-1]} if checkpoints else set()  # the newest, to resume from
    if best_model_checkpoint is not None:
        protected.add(str(Path(best_model_checkpoint)))
    remaining = len(checkpoints)
    for checkpoint in checkpoints:
        if remaining <= max(save_total_limit, len(protected)):
            break
        if checkpoint not in protected:
            remove_checkpoint(checkpoint)
            remaining -= 1


def keep_only_best(output_dir: str, best_model_checkpoint: str) -> None:
    """End of training with ``save_total_limit=1``: transformers deletes every checkpoint but the best."""
    for folder in sort_checkpoints(output_dir=output_dir, best_model_checkpoint=best_model_checkpoint):
        if not os.path.samefile(folder, best_model_checkpoint):
            log.info(f"Deleting older checkpoint [{folder}] due to args.save_total_limit")
            remove_checkpoint(folder)


def remove_checkpoint(folder: str) -> None:
    """Deletes a checkpoint folder without ever leaving a partial one under its name: it is renamed to a hidden name
    first (one atomic step), then removed; a crash in between leaves the hidden folder, which the next run's
    `recover_output_dir` removes."""
    parent, name = os.path.split(os.path.normpath(folder))
    doomed = os.path.join(parent, _DELETED_PREFIX + name)
    shutil.rmtree(doomed, ignore_errors=True)
    try:
        os.rename(folder, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)
