"""HFModule hooks, optimizer groups and schedules against transformers' own factories."""

from __future__ import annotations

import pytest
import torch
import transformers

from hf_lightning import HFModule
from hf_lightning.optim import build_scheduler, resolve_warmup_steps
from tests.helpers.tiny import TINY_BERT

TINY_GPT2 = {"model_type": "gpt2", "vocab_size": 64, "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 32}


def _bert(**kwargs) -> HFModule:
    torch.manual_seed(0)
    return HFModule(model=TINY_BERT, num_labels=3, **kwargs)


def test_optimizer_groups_equal_transformers_trainer(tmp_path):
    module = _bert(weight_decay=0.1, learning_rate=3e-4)
    ours = module.create_optimizer()
    args = transformers.TrainingArguments(tmp_path, weight_decay=0.1, learning_rate=3e-4, report_to=[], use_cpu=True)
    theirs = transformers.Trainer(model=module.model, args=args).create_optimizer()
    assert type(ours) is type(theirs)
    for a, b in zip(ours.param_groups, theirs.param_groups, strict=True):
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}
    assert ours.param_groups[1]["weight_decay"] == 0.0 and len(ours.param_groups[1]["params"]) > 0


@pytest.mark.parametrize("name", [s.value for s in transformers.SchedulerType
                                  if s.value not in ("reduce_lr_on_plateau", "greedy")])
def test_every_scheduler_matches_get_scheduler(name):
    kwargs = {"warmup_stable_decay": {"num_decay_steps": 4}, "cosine_with_min_lr": {"min_lr_rate": 0.1},
              "cosine_warmup_with_min_lr": {"min_lr_rate": 0.1}}.get(name)

    def lrs(build):
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([param], lr=1.0)
        sched = build(opt)
        out = []
        for _ in range(10):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    ours = lrs(lambda o: build_scheduler(o, lr_scheduler_type=name, num_training_steps=10, warmup_steps=0.2,
                                         lr_scheduler_kwargs=kwargs))
    theirs = lrs(lambda o: transformers.get_scheduler(name, o, num_warmup_steps=2, num_training_steps=10,
                                                      scheduler_specific_kwargs=kwargs))
    assert ours == theirs


def test_warmup_rule_count_or_ratio():
    assert resolve_warmup_steps(3, 100) == 3
    assert resolve_warmup_steps(0.05, 30) == 2  # ceil(1.5)
    with pytest.raises(ValueError, match="warmup_steps"):
        resolve_warmup_steps(2.5, 100)


def test_unknown_names_fail_before_training():
    with pytest.raises(ValueError, match="task='nope'"):
        HFModule(model=TINY_BERT, task="nope")
    with pytest.raises(ValueError, match="optim='nope'"):
        _bert(optim="nope").create_optimizer()
    with pytest.raises(ValueError, match="Unknown metric"):
        _bert(metrics=["acuracy"])


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


def test_prediction_step_returns_loss_logits_labels():
    module = _bert()
    module.model.eval()
    inputs = {"input_ids": torch.randint(1, 100, (2, 4)), "labels": torch.tensor([0, 2])}
    loss, logits, labels = module.prediction_step(module.model, inputs, prediction_loss_only=False)
    assert loss.ndim == 0 and logits.shape == (2, 3) and torch.equal(labels, inputs["labels"])
    assert module.prediction_step(module.model, inputs, prediction_loss_only=True)[1:] == (None, None)


def test_label_smoothing_uses_transformers_label_smoother():
    module = _bert(label_smoothing_factor=0.1)
    module.model.eval()
    inputs = {"input_ids": torch.randint(1, 100, (4, 6)), "labels": torch.tensor([0, 2, 1, 1])}
    loss, outputs = module.compute_loss(module.model, dict(inputs), return_outputs=True)
    expected = transformers.trainer_pt_utils.LabelSmoother(0.1)(outputs, inputs["labels"])
    torch.testing.assert_close(loss, expected)


def test_save_pretrained_round_trips(tmp_path):
    module = HFModule(model="minilm", num_labels=2)
    module.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.classifier.weight, module.model.classifier.weight)
    assert transformers.AutoTokenizer.from_pretrained(tmp_path)("a film")["input_ids"][0] == 101


def test_liger_kernels_are_refused_before_training_where_they_cannot_run(tmp_path, monkeypatch):
    """use_liger_kernel without CUDA: an error that says so when the module is built (both doors), before any step;
    with CUDA but without the package: the install line."""
    from hf_lightning import Trainer, TrainingArguments
    from tests.helpers.tiny import TINY_BERT, RegressionDataset, RegressionModel

    with pytest.raises(ValueError, match="use_liger_kernel=True: Liger's kernels are Triton kernels for CUDA GPUs"):
        HFModule(model=dict(TINY_BERT), num_labels=2, use_liger_kernel=True)
    args = TrainingArguments(str(tmp_path), use_liger_kernel=True, report_to=[], use_cpu=True, max_steps=2)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset())
    with pytest.raises(ValueError, match="no CUDA device is visible"):
        trainer.train()
    assert trainer.state.global_step == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("transformers.utils.is_liger_kernel_available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install 'hf_lightning\[liger\]'"):
        HFModule(model=dict(TINY_BERT), num_labels=2, use_liger_kernel=True)


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
