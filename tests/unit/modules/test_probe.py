"""The loss-scaling probe (hf_lightning/modules/probe.py): which losses honour num_items_in_batch, and no trace left."""

from __future__ import annotations

import torch

from hf_lightning import CompileSettings, HFModule
from tests.unit.modules.helpers import _bert

TINY_GPT2 = {"model_type": "gpt2", "vocab_size": 64, "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 32}


def _batch(vocab: int, lengths: list[int]) -> dict[str, torch.Tensor]:
    width = max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), width))
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_probe_tells_which_losses_honour_num_items_in_batch():
    """GPT-2's loss divides by num_items_in_batch; BERT's sequence-classification loss (**kwargs) ignores it."""
    gpt = HFModule(model=TINY_GPT2, task="causal-lm")
    assert gpt._probe_scaled_for_ga(_batch(64, [5, 3])) is True
    bert = _bert()
    inputs = {"input_ids": torch.randint(1, 100, (2, 4)), "labels": torch.tensor([0, 2])}
    assert bert.model_accepts_loss_kwargs  # transformers would skip the division by the window size here
    assert bert._probe_scaled_for_ga(inputs) is False


class _Recording(torch.nn.Module):
    """A forward with side effects: it records the inputs it saw in a buffer and draws random numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.register_buffer("seen", torch.empty(0))

    def forward(self, input_x, labels=None, **kwargs):
        self.seen = torch.cat([self.seen, input_x[:, 0]])  # replaces the buffer object
        noise = torch.rand(())  # consumes the random stream
        logits = self.linear(input_x) + 0 * noise
        return (torch.nn.functional.cross_entropy(logits, labels), logits)


def test_the_probe_leaves_no_trace():
    """The loss-scaling probe's two forwards: buffers, the training mode and the random streams as they were."""
    module = HFModule(model=_Recording())
    module.model.train()
    inputs = {"input_x": torch.randn(3, 4), "labels": torch.tensor([0, 1, 0])}
    before = torch.random.get_rng_state()
    assert module._probe_scaled_for_ga(inputs) is False  # a mean loss: it ignores num_items_in_batch
    assert module.model.seen.numel() == 0 and dict(module.model.named_buffers())["seen"].numel() == 0
    assert module.model.training
    assert torch.equal(torch.random.get_rng_state(), before)


def test_the_probe_does_not_compile_a_compiled_model():
    """The probe's eval-mode, no-grad forwards run eagerly on a compiled model (whole or by blocks): TorchDynamo
    captures nothing, so the first step compiles only the training graph."""
    import torch._dynamo.utils as dynamo_utils

    for scope in ("model", "blocks"):
        module = HFModule(model=TINY_GPT2, task="causal-lm", compilation=CompileSettings(
            torch_compile=True, torch_compile_backend="eager", torch_compile_scope=scope))
        module.configure_model()
        torch._dynamo.reset()
        dynamo_utils.counters.clear()
        assert module._probe_scaled_for_ga(_batch(64, [5, 3])) is True
        assert dynamo_utils.counters["stats"]["unique_graphs"] == 0, scope
        module.model.train()
        module.model(**_batch(64, [4, 4]))  # the training forward is compiled
        assert dynamo_utils.counters["stats"]["unique_graphs"] > 0, scope


class _CountPlusPenalty(torch.nn.Module):
    """A loss over num_items_in_batch plus a penalty the count does not divide (as a router / auxiliary loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, input_x, labels=None, num_items_in_batch=None, **kwargs):
        error = ((input_x * self.weight - labels) ** 2).sum()
        return (error / (num_items_in_batch or len(labels)) + self.weight ** 2, input_x)


def test_a_loss_neither_halved_nor_unchanged_by_the_count_is_not_clear_cut():
    """Such a loss gets no verdict (None), and training then takes transformers' rule: the count is passed (the model
    takes **kwargs) and the loss is not divided by the accumulation steps."""
    module = HFModule(model=_CountPlusPenalty())
    inputs = {"input_x": torch.randn(4), "labels": torch.randn(4)}
    assert module._probe_scaled_for_ga(inputs) is None
    assert module.model_accepts_loss_kwargs
