"""Unit tests for hf_lightning.losses: references are torch / transformers functions or explicit loops."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_lightning.losses import (
    LOSSES,
    DistillationLoss,
    FocalLoss,
    LabelSmoothingLoss,
    MultiTaskLoss,
    NTXentLoss,
    UncertaintyWeightedLoss,
    WeightedCrossEntropyLoss,
    build_loss,
    class_weights_from_labels,
    focal_loss,
    nt_xent_loss,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


def _token_batch(seed: int = 0, n: int = 3, t: int = 5, c: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level logits [n, t, c] and labels [n, t] with a few -100 positions."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, t, c, generator=g) * 2
    labels = torch.randint(0, c, (n, t), generator=g)
    labels[0, :2] = -100
    labels[2, -1] = -100
    return logits, labels


# ---------------------------------------------------------------- label smoothing
@pytest.mark.parametrize("shift", [False, True])
def test_label_smoothing_equals_transformers_label_smoother(shift: bool) -> None:
    from transformers.trainer_pt_utils import LabelSmoother

    logits, labels = _token_batch()
    ours = LabelSmoothingLoss(epsilon=0.2, shift_labels=shift)(logits, labels)
    ref = LabelSmoother(epsilon=0.2)({"logits": logits}, labels, shift_labels=shift)
    torch.testing.assert_close(ours, ref)
    # explicit formula: (1 - eps) * nll + eps * mean_k(-log p_k) over non-ignored positions
    lg, lb = (logits[:, :-1], labels[:, 1:]) if shift else (logits, labels)
    keep = lb != -100
    logp = F.log_softmax(lg[keep], -1)
    nll = -logp.gather(-1, lb[keep].unsqueeze(-1)).mean()
    torch.testing.assert_close(ours, 0.8 * nll + 0.2 * (-logp.mean(-1)).mean())


def test_label_smoothing_epsilon_zero_is_cross_entropy_and_takes_model_output() -> None:
    from transformers.modeling_outputs import TokenClassifierOutput

    logits, labels = _token_batch(seed=1)
    ce = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(LabelSmoothingLoss(epsilon=0.0)(logits, labels), ce)
    torch.testing.assert_close(LabelSmoothingLoss(epsilon=0.0)(TokenClassifierOutput(logits=logits), labels), ce)


# ---------------------------------------------------------------- focal
@pytest.mark.parametrize("shape", [(6, 4), (3, 5, 4)])
def test_focal_gamma_zero_is_cross_entropy(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(*shape, generator=g)
    labels = torch.randint(0, 4, shape[:-1], generator=g)
    labels.view(-1)[1] = -100
    ce = F.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, labels), ce)


def test_focal_matches_formula_and_down_weights_easy_examples() -> None:
    logits, labels = _token_batch(seed=3)
    alpha = [0.5, 1.0, 2.0, 0.1, 0.3, 1.5, 0.7]
    out = FocalLoss(gamma=2.0, alpha=alpha, reduction="none")(logits, labels)
    assert out.shape == labels.shape
    for i, j in torch.cartesian_prod(torch.arange(3), torch.arange(5)).tolist():  # explicit per-item reference
        if labels[i, j] == -100:
            assert out[i, j] == 0
            continue
        p = torch.softmax(logits[i, j], -1)[labels[i, j]]
        torch.testing.assert_close(out[i, j], -alpha[labels[i, j]] * (1 - p) ** 2 * torch.log(p))
    plain = FocalLoss(gamma=2.0)(logits, labels)
    ce = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1))
    assert 0 < plain < ce  # (1 - p)^2 < 1 shrinks every term


def test_focal_binary_alpha_float_and_sigmoid_form() -> None:
    g = torch.Generator().manual_seed(4)
    logits2 = torch.randn(8, 2, generator=g)
    labels = torch.tensor([0, 1, 1, 0, -100, 1, 0, 1])
    torch.testing.assert_close(
        focal_loss(logits2, labels, gamma=1.0, alpha=0.25),
        focal_loss(logits2, labels, gamma=1.0, alpha=[0.75, 0.25]),
    )
    with pytest.raises(ValueError, match="alpha"):
        focal_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), alpha=0.25)
    with pytest.raises(ValueError, match="C >= 2"):
        focal_loss(torch.randn(4, 1), torch.tensor([0, 1, 1, 0]))
    with pytest.raises(ValueError, match="does not fit logits"):
        focal_loss(torch.randn(4, 3), torch.zeros(4, 3, 2))
    # sigmoid / multi-label form: gamma=0, alpha=None is BCE-with-logits over non-ignored entries
    logits = torch.randn(5, 3, generator=g)
    targets = torch.randint(0, 2, (5, 3), generator=g).float()
    targets[0, 0] = -100
    keep = targets != -100
    bce = F.binary_cross_entropy_with_logits(logits[keep], targets[keep])
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, targets), bce)
    per = FocalLoss(gamma=0.0, alpha=0.8, reduction="none")(logits, targets)
    ref = F.binary_cross_entropy_with_logits(logits, targets.clamp(min=0), reduction="none")
    weight = torch.where(targets == 1, 0.8, 0.2)
    torch.testing.assert_close(per[keep], (weight * ref)[keep])
    assert per[0, 0] == 0


# ---------------------------------------------------------------- HF-style normalisation
@pytest.mark.parametrize(
    "make",
    [
        lambda: LabelSmoothingLoss(epsilon=0.1),
        lambda: FocalLoss(gamma=2.0, alpha=[1, 2, 3, 1, 1, 1, 0.5]),
        lambda: WeightedCrossEntropyLoss([1.0] * 7),
        lambda: DistillationLoss(temperature=3.0, alpha=0.4),
    ],
)
def test_num_items_in_batch_makes_micro_batches_add_up_to_full_batch(make) -> None:
    loss_fn = make()
    logits, labels = _token_batch(seed=5, n=4)
    teacher = torch.randn_like(logits)
    is_kd = isinstance(loss_fn, DistillationLoss)

    def inputs(s: slice) -> tuple[torch.Tensor, ...]:
        return (logits[s], teacher[s], labels[s]) if is_kd else (logits[s], labels[s])

    full = loss_fn(*inputs(slice(None)))
    num_items = (labels != -100).sum()
    parts = [loss_fn(*inputs(s), num_items_in_batch=num_items) for s in (slice(0, 1), slice(1, 4))]
    torch.testing.assert_close(sum(parts), full)
    assert not torch.allclose(parts[0], full * 0.25)  # the micro-batches are unequal: plain means would not add up


# ---------------------------------------------------------------- class weights
def test_weighted_cross_entropy_is_torch_weighted_ce() -> None:
    logits, labels = _token_batch(seed=6)
    weights = [0.5, 1.0, 2.0, 1.0, 3.0, 0.2, 1.0]
    ref = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), weight=torch.tensor(weights), label_smoothing=0.1)
    loss_fn = WeightedCrossEntropyLoss(weights, label_smoothing=0.1)
    torch.testing.assert_close(loss_fn(logits, labels), ref)
    assert "class_weights" not in loss_fn.state_dict()  # configuration, rebuilt from init_args
    with pytest.raises(ValueError, match="class_weights has 3 entries"):
        WeightedCrossEntropyLoss([1.0, 1.0, 1.0])(logits, labels)


def test_class_weights_from_labels() -> None:
    labels = torch.tensor([0, 0, 0, 1, -100, 2, 2, 0])  # counts 4, 1, 2 over 7 counted labels
    counts = torch.tensor([4.0, 1.0, 2.0])
    inverse = class_weights_from_labels(labels, 3)
    torch.testing.assert_close(torch.tensor(inverse), 7 / (3 * counts))
    torch.testing.assert_close(torch.tensor(class_weights_from_labels(labels.tolist(), 3, "sqrt_inverse")),
                               torch.sqrt(7 / (3 * counts)))
    assert class_weights_from_labels([0, 1, 2, 2, 1, 0], 3) == pytest.approx([1.0, 1.0, 1.0])
    assert inverse[1] > inverse[2] > inverse[0]  # rarest class weighs most
    with pytest.raises(ValueError, match=r"classes \[3\] never occur"):
        class_weights_from_labels(labels, 4)
    with pytest.raises(ValueError, match="num_classes=2"):
        class_weights_from_labels(labels, 2)
    with pytest.raises(ValueError, match="scheme"):
        class_weights_from_labels(labels, 3, scheme="log")


# ---------------------------------------------------------------- NT-Xent
def _slow_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    z = [*z1.tolist(), *z2.tolist()]
    n2 = len(z)

    def cos(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    total = 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        denom = sum(math.exp(cos(z[i], z[k]) / temperature) for k in range(n2) if k != i)  # 1 positive + 2N-2
        total += -math.log(math.exp(cos(z[i], z[pos]) / temperature) / denom)
    return total / n2


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_ntxent_matches_slow_reference(temperature: float) -> None:
    g = torch.Generator().manual_seed(7)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    ours = NTXentLoss(temperature)(z1, z2)
    assert ours.item() == pytest.approx(_slow_nt_xent(z1, z2, temperature), rel=1e-5)
    # aligned views score better than unrelated ones
    assert nt_xent_loss(z1, z1 + 0.01 * z2, temperature) < ours


def test_ntxent_rejects_mismatched_views() -> None:
    with pytest.raises(ValueError, match="z1 and z2"):
        NTXentLoss()(torch.randn(4, 3), torch.randn(5, 3))


# ---------------------------------------------------------------- distillation
def test_distillation_alpha_limits_and_masking() -> None:
    student, labels = _token_batch(seed=8)
    teacher = torch.randn_like(student)
    keep = labels != -100
    t = 2.0
    p_t = torch.softmax(teacher[keep] / t, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(student[keep] / t, -1))).sum(-1).mean()
    torch.testing.assert_close(DistillationLoss(t, alpha=1.0)(student, teacher, labels), t**2 * kl)
    ce = F.cross_entropy(student.reshape(-1, 7), labels.reshape(-1))
    torch.testing.assert_close(DistillationLoss(t, alpha=0.0)(student, teacher, labels), ce)
    hard = torch.tensor(1.5)
    mixed = DistillationLoss(t, alpha=0.3)(student, teacher, labels, hard_loss=hard)
    torch.testing.assert_close(mixed, 0.3 * t**2 * kl + 0.7 * hard)
    # ignored positions do not count: changing their logits leaves the loss unchanged
    student2, teacher2 = student.clone(), teacher.clone()
    student2[~keep], teacher2[~keep] = 50.0, -50.0
    kd = DistillationLoss(t, 0.5)
    torch.testing.assert_close(kd(student2, teacher2, labels), kd(student, teacher, labels))
    with pytest.raises(ValueError, match="labels or hard_loss"):
        DistillationLoss(alpha=0.5)(student, teacher)
    with pytest.raises(ValueError, match="labels \\(3,\\)"):
        DistillationLoss(alpha=0.5)(student, teacher, labels[:, 0])


@pytest.mark.parametrize(
    "make",
    [lambda **kw: FocalLoss(gamma=1.0, **kw), lambda **kw: WeightedCrossEntropyLoss([1.0, 2.0] * 3 + [1.0], **kw)],
)
def test_shift_labels_for_causal_lm(make) -> None:
    logits, labels = _token_batch(seed=11)
    shifted = make(shift_labels=True)(logits, labels)
    torch.testing.assert_close(shifted, make()(logits[:, :-1], labels[:, 1:]))
    assert not torch.allclose(shifted, make()(logits, labels))


def test_distillation_shift_labels_for_causal_lm() -> None:
    student, labels = _token_batch(seed=10)
    teacher = torch.randn_like(student)
    shifted = DistillationLoss(alpha=0.5, shift_labels=True)(student, teacher, labels)
    by_hand = DistillationLoss(alpha=0.5)(student[:, :-1], teacher[:, :-1], labels[:, 1:])
    torch.testing.assert_close(shifted, by_hand)
    assert not torch.allclose(shifted, DistillationLoss(alpha=0.5)(student, teacher, labels))


def test_distillation_t_squared_keeps_gradient_scale() -> None:
    g = torch.Generator().manual_seed(9)
    student0, teacher = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g).requires_grad_(True)
    norms = {}
    for t in (4.0, 8.0, 16.0):
        student = student0.clone().requires_grad_(True)
        DistillationLoss(temperature=t, alpha=1.0)(student, teacher).backward()
        norms[t] = student.grad.norm().item()
        assert teacher.grad is None  # the teacher is a fixed target
    assert max(norms.values()) / min(norms.values()) < 1.2  # roughly temperature independent
    unscaled = {t: n / t**2 for t, n in norms.items()}
    assert unscaled[4.0] / unscaled[16.0] > 10  # without T^2 the gradient would shrink with T


# ---------------------------------------------------------------- multi-task
def test_multitask_weighted_sum() -> None:
    loss_fn = MultiTaskLoss({"cls": 1.0, "ner": 0.5})
    a, b = torch.tensor(2.0), torch.tensor(4.0)
    torch.testing.assert_close(loss_fn({"cls": a, "ner": b}), a + 0.5 * b)
    torch.testing.assert_close(loss_fn({"ner": b}), 0.5 * b)
    with pytest.raises(ValueError, match="unknown: \\['pos'\\]"):
        loss_fn({"pos": a})


def test_uncertainty_weighting_trains_saves_and_down_weights_noisy_task() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    w_true = torch.randn(4, 2)
    y = x @ w_true + torch.randn(256, 2) * torch.tensor([0.1, 1.0])  # task "b" is 10x noisier
    model = nn.ModuleDict({"net": nn.Linear(4, 2), "loss": UncertaintyWeightedLoss(["a", "b"])})
    assert "loss.log_vars" in model.state_dict()
    assert torch.equal(model["loss"].log_vars.detach(), torch.zeros(2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for step in range(300):
        pred = model["net"](x)
        losses = {"a": F.mse_loss(pred[:, 0], y[:, 0]), "b": F.mse_loss(pred[:, 1], y[:, 1])}
        opt.zero_grad()
        model["loss"](losses).backward()
        opt.step()
        if step == 0:
            assert not torch.equal(model["loss"].log_vars.detach(), torch.zeros(2))
    weights = model["loss"].task_weights()
    assert weights["b"] < weights["a"] / 10  # optimum exp(-s_i) = 1 / L_i: noise variances differ 100x
    state = model.state_dict()
    fresh = nn.ModuleDict({"net": nn.Linear(4, 2), "loss": UncertaintyWeightedLoss(["a", "b"])})
    fresh.load_state_dict(state)
    assert fresh["loss"].task_weights() == pytest.approx(weights)


def test_uncertainty_weights_train_inside_lightning_and_reach_the_checkpoint(tmp_path) -> None:
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(3, 2)
            self.loss = build_loss({"name": "uncertainty", "init_args": {"task_names": ["a", "b"]}})

        def training_step(self, batch, batch_idx):
            pred = self.net(batch[0])
            return self.loss({"a": F.mse_loss(pred[:, 0], batch[1][:, 0]), "b": F.l1_loss(pred[:, 1], batch[1][:, 1])})

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(16, 3), torch.randn(16, 2) * 3)
    module = Module()
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    assert not torch.equal(module.loss.log_vars.detach(), torch.zeros(2))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]["loss.log_vars"]
    torch.testing.assert_close(saved, module.loss.log_vars.detach())


# ---------------------------------------------------------------- validation and registry
@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (LabelSmoothingLoss, {"epsilon": 1.5}, "epsilon"),
        (FocalLoss, {"gamma": -1.0}, "gamma"),
        (FocalLoss, {"alpha": 1.5}, "alpha"),
        (FocalLoss, {"reduction": "avg"}, "reduction"),
        (WeightedCrossEntropyLoss, {"class_weights": []}, "class_weights"),
        (NTXentLoss, {"temperature": 0.0}, "temperature"),
        (DistillationLoss, {"temperature": -2.0}, "temperature"),
        (DistillationLoss, {"alpha": 1.1}, "alpha"),
        (MultiTaskLoss, {"weights": {}}, "weights"),
        (UncertaintyWeightedLoss, {"task_names": ["a", "a"]}, "task_names"),
    ],
)
def test_bad_arguments_name_the_field(cls, kwargs, field) -> None:
    with pytest.raises(ValueError, match=f"{cls.__name__}: {field}="):
        cls(**kwargs)


def test_build_loss_forms_and_errors() -> None:
    names = {"label_smoothing", "focal", "weighted_ce", "ntxent", "distillation", "multitask", "uncertainty"}
    assert set(LOSSES) == names
    assert isinstance(build_loss("focal"), FocalLoss)
    assert build_loss({"name": "focal", "init_args": {"gamma": 1.0}}).gamma == 1.0
    path = "hf_lightning.losses.UncertaintyWeightedLoss"
    built = build_loss({"class_path": path, "init_args": {"task_names": ["x"]}})
    assert built.task_names == ["x"]
    ready = NTXentLoss(0.2)
    assert build_loss(ready) is ready
    with pytest.raises(ValueError, match="known names: .*'focal'.*'uncertainty'"):
        build_loss("focall")
    with pytest.raises(ValueError, match="bad init_args"):
        build_loss({"name": "focal", "init_args": {"gama": 1.0}})
    with pytest.raises(ValueError, match="epsilon"):
        build_loss({"name": "label_smoothing", "init_args": {"epsilon": 2.0}})
    with pytest.raises(ValueError, match="cannot import"):
        build_loss({"class_path": "hf_lightning.losses.NoSuchLoss"})
    with pytest.raises(ValueError, match="needs 'name' or 'class_path'"):
        build_loss({"name": "focal", "gamma": 1.0})
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        build_loss({"class_path": "collections.OrderedDict"})


@pytest.mark.parametrize(
    ("yaml_loss", "cls", "attr", "value"),
    [
        ("{class_path: hf_lightning.losses.FocalLoss, init_args: {alpha: [0.2, 0.8], reduction: sum}}", FocalLoss,
         "alpha", [0.2, 0.8]),
        ("{class_path: hf_lightning.losses.FocalLoss, init_args: {gamma: 1.5, alpha: 0.25}}", FocalLoss,
         "alpha", 0.25),
        ("{class_path: hf_lightning.losses.MultiTaskLoss, init_args: {weights: {a: 1.0, b: 0.5}}}", MultiTaskLoss,
         "weights", {"a": 1.0, "b": 0.5}),
        ("{class_path: hf_lightning.losses.DistillationLoss, init_args: {temperature: 4.0}}", DistillationLoss,
         "temperature", 4.0),
    ],
)
def test_yaml_class_path_instantiates(yaml_loss: str, cls: type, attr: str, value: object) -> None:
    from jsonargparse import ArgumentParser

    class Holder:
        def __init__(self, loss: nn.Module | None = None) -> None:
            self.loss = loss

    parser = ArgumentParser()
    parser.add_class_arguments(Holder, "model")
    cfg = parser.parse_string(f"model:\n  loss: {yaml_loss}\n")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    loss = instantiate(cfg).model.loss
    assert isinstance(loss, cls)
    assert getattr(loss, attr) == value
