"""What every benchmark run shares: data, model, HF's sample order and decay groups, and the measurements.

Everything here imports only torch, datasets and transformers' model / tokenizer classes (never
``transformers.Trainer``, lightning or hf_lightning), so the raw loop's start-up is not charged for libraries it does
not use.
"""

from __future__ import annotations

import importlib.util
import os
import random
import resource
import sys
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

#: Dropout off: the per-step losses of the five runs are then a pure function of seed, order and optimizer, so the
#: parity column can be exact. (The HF-style door reseeds after building the model, the CLI does not; with dropout
#: on, the two would draw different masks while computing the same thing.)
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}

#: A 2-layer BERT (tests/helpers/tiny.py's shape) built from its config: the per-step overhead dominates.
TINY_BERT = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128, **NO_DROPOUT}

_builtin: ModuleType | None = None


def builtin() -> ModuleType:
    """``hf_lightning/data/builtin.py`` loaded by path, without importing the package (which imports lightning)."""
    global _builtin
    if _builtin is None:
        package = importlib.util.find_spec("hf_lightning")
        path = os.path.join(next(iter(package.submodule_search_locations)), "data", "builtin.py")
        spec = importlib.util.spec_from_file_location("_bench_hfl_builtin", path)
        _builtin = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = _builtin  # dataclasses look their module up there
        spec.loader.exec_module(_builtin)
    return _builtin


def seed_all(seed: int) -> None:
    """What ``transformers.set_seed`` / ``lightning.seed_everything`` do for the CPU: python, numpy, torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(builtin().resolve_model_path("minilm"))


#: Held-out fractions of the packaged movie reviews: 20% validation (2,120 examples, enough for the 2,000 that
#: workload (a) evaluates), 10% test; 7,422 training examples.
VALIDATION_SIZE, TEST_SIZE = 0.2, 0.1


def raw_split(split: str, limit: int | None = None) -> datasets.Dataset:
    """A split of the packaged movie reviews, exactly as ``HFDataModule(dataset="movie_reviews",
    validation_size=VALIDATION_SIZE, test_size=TEST_SIZE)`` splits them."""
    ds = builtin().load_builtin("movie_reviews", VALIDATION_SIZE, TEST_SIZE)[split]
    return ds.select(range(min(limit, len(ds)))) if limit is not None else ds


def tokenize(ds: datasets.Dataset, tokenizer: Any, max_length: int) -> datasets.Dataset:
    """HFDataModule.preprocess's encoding: truncation, no padding (the collator pads), ``label`` -> ``labels``."""

    def encode(batch: dict[str, list]) -> dict[str, Any]:
        out = tokenizer(batch["text"], None, truncation=True, max_length=max_length, padding=False)
        out["labels"] = batch["label"]
        return out

    return ds.map(encode, batched=True, remove_columns=["text", "label"], desc="Tokenizing")


def model_input_columns(ds: datasets.Dataset) -> datasets.Dataset:
    """What the raw loop and the plain Lightning module feed the model (the trainers drop ``score`` themselves)."""
    return ds.remove_columns([c for c in ds.column_names if c == "score"])


def build_model(kind: str) -> nn.Module:
    """The benchmark model, built from the current RNG state (seed first)."""
    if kind == "tiny_bert":
        spec = dict(TINY_BERT)
        config = AutoConfig.for_model(spec.pop("model_type"), **spec, num_labels=2)
        return AutoModelForSequenceClassification.from_config(config)
    path = builtin().resolve_model_path("minilm")
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, **NO_DROPOUT)


def door_model_args(kind: str) -> dict[str, Any]:
    """The same model as `build_model`, spelled as HFModule arguments (what a yaml config would say)."""
    if kind == "tiny_bert":
        return {"model": dict(TINY_BERT), "num_labels": 2}
    return {"model": "minilm", "num_labels": 2, "model_kwargs": dict(NO_DROPOUT)}


def decay_parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """HF's two AdamW groups. The rule of ``transformers.Trainer.get_decay_parameter_names`` (5.23), restated here so
    the raw loop does not import ``transformers.Trainer``; tests/integration/test_bench.py checks they agree."""
    from transformers.trainer_pt_utils import get_parameter_names

    patterns = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    decay = set(get_parameter_names(model, [nn.LayerNorm], patterns))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
            {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]


def adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """transformers' ``adamw_torch_fused`` (its 5.x default): AdamW(fused=True), betas (0.9, 0.999), eps 1e-8."""
    return torch.optim.AdamW(decay_parameter_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                             fused=True)


class EpochSampler(Sampler[int]):
    """HF's training order: epoch ``e`` is ``torch.randperm(n, generator=manual_seed(seed + e))``."""

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class CountingCollator:
    """Wraps the collator a door uses by default with a tokenizer (dynamic padding) and notes each batch's samples,
    real (attention-mask) tokens and padded tokens, in collation order.

    ``inner``: the door's own default; transformers' ``DataCollatorWithPadding`` where None (transformers.Trainer, the
    raw loop, plain Lightning). hf_lightning's default (`PaddingCollator`) builds the same batches.
    """

    def __init__(self, tokenizer: Any, inner: Any = None) -> None:
        self.inner = DataCollatorWithPadding(tokenizer) if inner is None else inner
        self.batches: list[tuple[int, int, int]] = []

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        batch = self.inner(features)
        mask = batch["attention_mask"]
        self.batches.append((int(mask.shape[0]), int(mask.sum()), int(mask.numel())))
        return batch


class Gate:
    """Lockstep with the other runs of a round. A run pauses at its first optimizer step (start-up done), after every
    ``every`` steps and before each timed evaluate / predict call: it tells the parent (one byte on ``fd``) and waits
    for a line on stdin. The parent starts the runs of a round one by one up to their first step, then lets each run
    one stretch in turn, so every run of a round sees the same machine within a fraction of a second (the host's load
    drifts over seconds, and per-process CPU time inside a virtual machine does not exclude it). Without ``fd`` (a
    run on its own) it never pauses."""

    def __init__(self, every: int = 0, fd: int | None = None) -> None:
        self.every, self.fd, self.pauses = every, fd, 0

    def pause(self) -> float:
        """Waits for the parent's go; returns the wall-clock seconds spent waiting."""
        if self.fd is None:
            return 0.0
        start = time.perf_counter()
        self.pauses += 1
        os.write(self.fd, b"r")
        if not sys.stdin.buffer.readline():
            raise SystemExit("bench: the parent process has gone")
        return time.perf_counter() - start


#: This process's gate (`bench.py` sets it in a child run by the parent).
GATE = Gate()


class Recorder:
    """When the first optimizer step starts (wall clock, comparable with the parent's spawn time, and this process's
    CPU time so far), when every optimizer step ends (wall: perf_counter less the time paused at the `GATE`; CPU:
    process_time, which a paused process does not use) and the step losses, kept as tensors until the run ends (no
    extra host work).

    CPU time is what makes per-step comparisons hold on cores shared with other jobs: wall time there includes the
    time the process waited for a core, which depends on the neighbours, not on the code.
    """

    def __init__(self) -> None:
        self.first_step: float | None = None
        self.first_step_cpu: float | None = None
        self.first_step_perf: float | None = None
        self.step_ends: list[float] = []
        self.cpu_ends: list[float] = []
        self.losses: list[Any] = []
        self._micro: list[torch.Tensor] = []
        self._paused = 0.0

    def _now(self) -> float:
        return time.perf_counter() - self._paused

    def step_begin(self) -> None:
        if self.first_step is None:
            self.first_step, self.first_step_cpu, self.first_step_perf = time.time(), time.process_time(), \
                self._now()
            self._paused += GATE.pause()  # start-up is over: the next run of the round starts

    def micro(self, loss: torch.Tensor) -> None:
        """One micro-batch's loss, summed into the step loss at `step_end`."""
        self._micro.append(loss)

    def step_end(self, loss: torch.Tensor | None = None, divide: int = 1) -> None:
        """Ends a step; its loss is ``loss`` or the sum of the micro-batch losses divided by ``divide``."""
        self.step_ends.append(self._now())
        self.cpu_ends.append(time.process_time())
        self.losses.append((loss,) if loss is not None else (tuple(self._micro), divide))
        self._micro = []
        if GATE.every and len(self.step_ends) % GATE.every == 0:
            self._paused += GATE.pause()

    def step_losses(self) -> list[float]:
        out = []
        for entry in self.losses:
            if len(entry) == 1:
                out.append(float(entry[0]))
            else:
                micro, divide = entry
                out.append(sum(float(x) for x in micro) / divide)
        return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def load_average() -> float:
    return os.getloadavg()[0]
