"""Advanced recipes end to end on a 2-layer BERT: distillation, FGM adversarial training, layer-wise lr decay, LoRA.

Each training test measures its baseline in the same test (the untrained model, the teacher's state before training,
plain `HFModule` training with the same seed and data) and asserts against it.
"""

from __future__ import annotations

import copy
import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import transformers
from safetensors.torch import load_file

from hf_lightning import HFDataModule, HFFlow, HFModule, OptimizerSettings
from hf_lightning.cli import main
from hf_lightning.modules.adversarial import AdversarialModule
from hf_lightning.modules.distillation import DistillationModule
from hf_lightning.optim.groups import LLRDModule, layerwise_lr_decay_groups
from tests.helpers.tiny import TINY_BERT, tiny_text_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/integration/conftest.py


def tiny_bert(seed: int, **overrides: Any) -> transformers.PreTrainedModel:
    torch.manual_seed(seed)
    config = transformers.AutoConfig.for_model(**{**TINY_BERT, **overrides}, num_labels=2)
    return transformers.AutoModelForSequenceClassification.from_config(config)


def data(n: int = 32, batch_size: int = 8) -> HFDataModule:
    splits = {"train": tiny_text_dataset(n), "validation": tiny_text_dataset(16, seed=1)}
    return HFDataModule(dataset=splits, tokenizer="minilm", batch_size=batch_size, eval_batch_size=16)


def trainer(callbacks: list[L.Callback] | None = None, **kwargs: Any) -> L.Trainer:
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, use_distributed_sampler=False, callbacks=callbacks or [], **kwargs)


def eval_loss(module: HFModule, datamodule: HFDataModule) -> float:
    trainer().validate(module, datamodule, verbose=False)
    return module.eval_results["eval_loss"]


def all_inputs(datamodule: HFDataModule) -> dict[str, torch.Tensor]:
    """The whole training split as one padded batch."""
    datamodule.setup("fit")
    loader = torch.utils.data.DataLoader(datamodule.split("train"), batch_size=1000,
                                         collate_fn=datamodule.train_loader().collate_fn)
    return next(iter(loader))


# ----------------------------------------------------------------------------------------------- distillation
def soft_kl(module: DistillationModule, inputs: dict[str, torch.Tensor]) -> float:
    """``T^2 * KL(teacher_T || student_T)`` averaged over the examples, models in eval mode."""
    module.eval()
    with torch.no_grad():
        student = module.model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        teacher = module.teacher_logits(inputs)
    t = module.temperature
    kl = torch.nn.functional.kl_div((student / t).log_softmax(-1), (teacher / t).log_softmax(-1), log_target=True,
                                    reduction="batchmean")
    module.train()
    return float(kl * t**2)


def test_distillation_loss_is_the_mix_of_soft_and_hard_terms():
    module = DistillationModule(teacher=tiny_bert(1, hidden_size=48), model=tiny_bert(0), num_labels=2, alpha=0.25,
                                temperature=3.0)
    module.eval()
    batch = all_inputs(data(n=8))
    with torch.no_grad():
        loss, outputs = module.compute_loss(module.model, batch, return_outputs=True)
    soft = soft_kl(module, batch)
    expected = 0.25 * soft + 0.75 * torch.nn.functional.cross_entropy(outputs.logits, batch["labels"])
    torch.testing.assert_close(loss, expected)
    module.double()  # .to(dtype) / .to(device) reach the teacher, which is not a submodule
    assert module.teacher.dtype == torch.float64 and not module.teacher.training


def test_distillation_moves_student_toward_frozen_teacher_and_never_saves_it(tmp_path):
    teacher = tiny_bert(1, hidden_size=48)
    with torch.no_grad():  # a teacher that prefers class 0 (p ~ 0.88) where the labels are balanced: only the
        teacher.classifier.bias.copy_(torch.tensor([1.0, -1.0]))  # soft term can pull the student there
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = DistillationModule(teacher=teacher, model=tiny_bert(0), num_labels=2, alpha=1.0, temperature=2.0,
                                optimization=OptimizerSettings(learning_rate=1e-2))
    datamodule = data()
    inputs = all_inputs(datamodule)
    kl_start = soft_kl(module, inputs)
    fit = trainer(max_epochs=3, accumulate_grad_batches=2)  # the base class' accumulation normalisation applies
    fit.fit(module, datamodule)
    assert fit.global_step == 6
    assert soft_kl(module, inputs) < 0.25 * kl_start  # the student moved toward the teacher's outputs

    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in teacher_before.items())  # frozen
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    student_keys = {f"model.{k}" for k in module.model.state_dict()}
    assert set(module.state_dict()) == student_keys  # no teacher entries (its hidden size 48 would show anyway)
    fit.save_checkpoint(tmp_path / "last.ckpt")
    assert set(torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]) == student_keys
    module.save_pretrained(str(tmp_path / "export"))
    saved = load_file(tmp_path / "export" / "model.safetensors")
    assert set(saved) <= set(module.model.state_dict()) and all(v.shape[-1] != 48 for v in saved.values())
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "export")
    assert reloaded.config.hidden_size == 32


# ----------------------------------------------------------------------------------------------- FGM
class StepProbe(L.Callback):
    """Post-clip gradient norms (read in the optimizer's post-step hook, before zero_grad), the embedding
    perturbation seen by each training-mode forward (the loss-scaling probe's eval-mode forwards are left out) and
    whether the embeddings are back to their clean values before each optimizer step."""

    def __init__(self) -> None:
        self.post_clip: list[float] = []
        self.perturbations: list[float] = []
        self.restored: list[bool] = []
        self._start: torch.Tensor | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        optimizer.register_step_post_hook(lambda *_: self.post_clip.append(float(torch.nn.utils.get_total_norm(
            [p.grad for p in pl_module.parameters() if p.grad is not None]))))
        embeddings = pl_module.model.get_input_embeddings()
        embeddings.register_forward_hook(lambda mod, *_: self.perturbations.append(
            float((mod.weight.detach() - self._start).norm())) if mod.training and self._start is not None else None)
        optimizer.register_step_pre_hook(lambda *_: self.restored.append(torch.equal(embeddings.weight, self._start)))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._start = pl_module.model.get_input_embeddings().weight.detach().clone()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._start = None


def fgm_run(module: HFModule, accumulate: int) -> tuple[L.Trainer, HFFlow, StepProbe]:
    flow, probe = HFFlow(logging_steps=1), StepProbe()
    fit = trainer([flow, probe], max_epochs=2, accumulate_grad_batches=accumulate)
    fit.fit(module, data(n=20, batch_size=4))  # 5 micro-batches an epoch: windows of 2, 2 and a short 1
    return fit, flow, probe


def step_logs(flow: HFFlow) -> list[tuple[float, float, float]]:
    return [(h["loss"], h["grad_norm"], h["learning_rate"]) for h in flow.state.log_history if "grad_norm" in h]


def test_fgm_with_epsilon_zero_equals_hfmodule_update_for_update():
    settings = {"num_labels": 2,
                "optimization": OptimizerSettings(learning_rate=1e-3, warmup_steps=1, max_grad_norm=0.05)}
    L.seed_everything(0)
    plain = HFModule(model=dict(TINY_BERT), **settings)
    plain_fit, plain_flow, _ = fgm_run(plain, accumulate=2)
    L.seed_everything(0)
    fgm = AdversarialModule(model=dict(TINY_BERT), epsilon=0.0, gradient_accumulation_steps=2, **settings)
    fgm_fit, fgm_flow, probe = fgm_run(fgm, accumulate=1)

    assert fgm_fit.global_step == plain_fit.global_step == 6  # 3 optimizer steps an epoch
    assert fgm_fit.lr_scheduler_configs[0].scheduler.last_epoch == 6  # one scheduler step per optimizer step
    for name, tensor in plain.state_dict().items():
        assert torch.equal(fgm.state_dict()[name], tensor), name
    assert step_logs(fgm_flow) == step_logs(plain_flow)  # loss, pre-clip grad_norm, learning_rate of all 6 steps
    assert len(step_logs(fgm_flow)) == 6
    assert min(norm for _, norm, _ in step_logs(fgm_flow)) > 0.05  # clipping engaged on every step ...
    assert probe.post_clip == pytest.approx([0.05] * 6, rel=1e-4)  # ... and brought the norm to max_grad_norm


def test_fgm_perturbs_restores_and_learns():
    L.seed_everything(0)
    # epsilon is an L2 norm over the whole embedding matrix; this model's rows are ~0.1 long, so 0.1 is a real push
    module = AdversarialModule(model=dict(TINY_BERT), num_labels=2, epsilon=0.1, gradient_accumulation_steps=2,
                               optimization=OptimizerSettings(learning_rate=1e-2), metrics=["accuracy"])
    datamodule = data(n=64, batch_size=8)
    before = eval_loss(module, datamodule)
    flow, probe = HFFlow(logging_steps=4), StepProbe()
    fit = trainer([flow, probe], max_epochs=6)
    fit.fit(module, datamodule)
    assert fit.global_step == 24 and fit.lr_scheduler_configs[0].scheduler.last_epoch == 24
    # each micro-batch: a clean forward (no change), then one at distance epsilon from the clean embeddings
    assert probe.perturbations[0::2] == [0.0] * 48
    assert probe.perturbations[1::2] == pytest.approx([0.1] * 48, rel=1e-4)
    assert probe.restored == [True] * 24  # exactly restored before every optimizer step
    assert [h["step"] for h in flow.state.log_history if "loss" in h] == [4, 8, 12, 16, 20, 24]
    after = eval_loss(module, datamodule)
    assert after < 0.8 * before and module.eval_results["eval_accuracy"] > 0.9


def test_fgm_rejects_trainer_accumulation():
    module = AdversarialModule(model=dict(TINY_BERT), num_labels=2)
    with pytest.raises(ValueError, match="model.gradient_accumulation_steps=2"):
        trainer(max_steps=1, accumulate_grad_batches=2).fit(module, data(n=8))


# ----------------------------------------------------------------------------------------------- LLRD
def test_layerwise_lr_decay_groups_exact_values():
    model = tiny_bert(0)
    groups = layerwise_lr_decay_groups(model, learning_rate=1e-3, decay=0.8, weight_decay=0.01)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {
        "head": 1e-3, "head/no_decay": 1e-3,
        "layer_1": 1e-3 * 0.8, "layer_1/no_decay": 1e-3 * 0.8,
        "layer_0": 1e-3 * 0.8**2, "layer_0/no_decay": 1e-3 * 0.8**2,
        "embeddings": 1e-3 * 0.8**3, "embeddings/no_decay": 1e-3 * 0.8**3,
    }
    assert next(iter(lrs)) == "head"  # param_groups[0] holds the peak rate, the one HF logs
    names = {id(p): n for n, p in model.named_parameters()}
    members = {g["name"]: {names[id(p)] for p in g["params"]} for g in groups}
    assert {g["name"]: g["weight_decay"] for g in groups} == {name: 0.0 if "no_decay" in name else 0.01 for name in lrs}
    assert members["head"] == {"bert.pooler.dense.weight", "classifier.weight"}
    assert members["head/no_decay"] == {"bert.pooler.dense.bias", "classifier.bias"}
    assert members["embeddings/no_decay"] == {"bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias"}
    assert "bert.encoder.layer.1.output.dense.weight" in members["layer_1"]
    assert "bert.encoder.layer.0.attention.output.LayerNorm.bias" in members["layer_0/no_decay"]
    assert sum(len(m) for m in members.values()) == len(names)  # every parameter exactly once


def test_llrd_module_builds_transformers_optimizer_and_keeps_ratios_under_the_schedule():
    module = LLRDModule(model=dict(TINY_BERT), num_labels=2, layer_decay=0.5, optimization=OptimizerSettings(
        learning_rate=4e-3, optim="adamw_torch", adam_beta2=0.98, weight_decay=0.1, lr_scheduler_type="cosine",
        warmup_steps=2))
    optimizer = module.create_optimizer()
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["betas"] == (0.9, 0.98)
    assert [g["lr"] for g in optimizer.param_groups[::2]] == [4e-3, 2e-3, 1e-3, 5e-4]
    scheduler = module.create_scheduler(10, optimizer)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
        head = optimizer.param_groups[0]["lr"]
        ratios = [g["lr"] / head for g in optimizer.param_groups[::2]]
        assert ratios == pytest.approx([1, 0.5, 0.25, 0.125], rel=1e-12)
    with pytest.raises(ValueError, match="model.layer_decay=1.5"):
        LLRDModule(model=dict(TINY_BERT), num_labels=2, layer_decay=1.5)


# ----------------------------------------------------------------------------------------------- LoRA
def test_lora_trains_only_adapters_and_saved_adapter_reloads(tmp_path):
    import peft  # the `peft` extra (in dev)

    from hf_lightning.peft import LoraModule

    base = tiny_bert(0)
    pristine = copy.deepcopy(base)
    module = LoraModule(model=base, num_labels=2, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                        optimization=OptimizerSettings(learning_rate=1e-2))
    with redirect_stdout(io.StringIO()) as printed:
        module.model.print_trainable_parameters()
    assert module.trainable_report == printed.getvalue().strip()  # peft's own line

    datamodule = data()
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    fit = trainer(max_epochs=2)
    fit.fit(module, datamodule)
    changed = {k for k, v in module.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("lora_" in k or "modules_to_save" in k for k in changed)  # the base stays frozen
    assert any("lora_B" in k for k in changed)  # the adapters trained (lora_B starts at zero)

    module.save_pretrained(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    loaded = peft.PeftModel.from_pretrained(pristine, tmp_path / "adapter").eval()
    module.model.eval()
    batch = {k: v for k, v in all_inputs(datamodule).items() if k != "labels"}
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, module.model(**batch).logits)


# ----------------------------------------------------------------------------------------------- recipes via the CLI
@pytest.mark.parametrize("config", ["distillation.yaml", "adversarial_fgm.yaml", "llrd.yaml", "lora.yaml"])
def test_recipe_yaml_trains_through_the_cli(config, tmp_path):
    """Each shipped recipe, shrunk to a 2-layer BERT, 2 steps and 32 examples, trains and exports through the CLI."""
    extra = {"distillation.yaml": ["--model.init_args.teacher", json.dumps(TINY_BERT | {"hidden_size": 48}),
                                   "--model.init_args.model_kwargs", "null"]}.get(config, [])
    export = tmp_path / "export"
    cli = main([
        "fit", "--config", str(CONFIGS / config), "--model.init_args.model", json.dumps(TINY_BERT),
        "--model.init_args.tokenizer", "minilm", "--data.init_args.max_train_samples", "32",
        "--data.init_args.max_eval_samples", "16", "--trainer.max_steps", "2", "--trainer.logger", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(tmp_path),
        "--export_dir", str(export), *extra,
    ])
    assert cli.trainer.global_step == 2
    weights = "adapter_model.safetensors" if config == "lora.yaml" else "model.safetensors"
    saved = load_file(export / weights)
    assert saved and all(v.shape[-1] != 48 for v in saved.values())  # the distillation teacher is not exported
