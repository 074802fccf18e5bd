"""HFModule (hf_lightning/modules/base.py): names checked before training, HF's label smoothing, save_pretrained, the
progress bar, parameters outside the model that train too, and the grouped settings (flat keywords still accepted)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import transformers
import yaml
from lightning.pytorch.callbacks.progress import ProgressBar

from hf_lightning import CompileSettings, HFDataModule, HFModule, OptimizerSettings
from hf_lightning.losses import UncertaintyWeightedLoss
from tests.helpers.tiny import TINY_BERT, tiny_text_dataset
from tests.unit.callbacks.helpers import fit
from tests.unit.modules.helpers import _bert


def test_unknown_names_fail_before_training():
    with pytest.raises(ValueError, match="task='nope'"):
        HFModule(model=TINY_BERT, task="nope")
    with pytest.raises(ValueError, match="optim='nope'"):
        _bert(optimization=OptimizerSettings(optim="nope")).create_optimizer()
    with pytest.raises(ValueError, match="Unknown metric"):
        _bert(metrics=["acuracy"])


def test_label_smoothing_uses_transformers_label_smoother():
    module = _bert(label_smoothing_factor=0.1)
    module.model.eval()
    inputs = {"input_ids": torch.randint(1, 100, (4, 6)), "labels": torch.tensor([0, 2, 1, 1])}
    loss, outputs = module.compute_loss(module.model, dict(inputs), return_outputs=True)
    expected = transformers.trainer_pt_utils.LabelSmoother(0.1)(outputs, inputs["labels"])
    torch.testing.assert_close(loss, expected)


def test_label_smoothing_works_for_a_model_without_a_config():
    """A plain nn.Module has no ``config``: transformers.Trainer fails on it when built (it reads
    ``model.config.problem_type``); here its loss is smoothed as any other."""
    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 4)

        def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
            return {"logits": self.linear(x)}

    args = transformers.TrainingArguments("unused", label_smoothing_factor=0.1, report_to=[], use_cpu=True)
    with pytest.raises(AttributeError, match="config"):
        transformers.Trainer(model=Classifier(), args=args)
    module = HFModule(model=Classifier(), label_smoothing_factor=0.1)
    inputs = {"x": torch.randn(5, 3), "labels": torch.tensor([0, 1, 2, 3, 0])}
    loss = module.compute_loss(module.model, dict(inputs))
    expected = transformers.trainer_pt_utils.LabelSmoother(0.1)(module.model(inputs["x"]), inputs["labels"])
    torch.testing.assert_close(loss, expected)


def test_save_pretrained_round_trips(tmp_path):
    module = HFModule(model="minilm", num_labels=2)
    module.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.classifier.weight, module.model.classifier.weight)
    assert transformers.AutoTokenizer.from_pretrained(tmp_path)("a film")["input_ids"][0] == 101


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_bar_shows_the_loss(enabled: bool) -> None:
    trainer, _module, _ = fit([], progress=enabled, max_steps=3)
    if enabled:
        assert isinstance(trainer.progress_bar_callback, ProgressBar)  # Lightning's TQDM or Rich bar
        assert "loss" in trainer.progress_bar_metrics
    else:
        assert trainer.progress_bar_callback is None


def test_hfmodule_trains_a_learned_weighting_held_outside_the_model(tmp_path) -> None:
    """An HFModule subclass combining two losses with UncertaintyWeightedLoss: its log_vars reach the optimizer (one
    extra group, no weight decay), move during fit, and are in the Lightning checkpoint; the model's groups stay HF's."""
    import lightning as L

    from hf_lightning import HFDataModule, HFModule
    from tests.helpers.tiny import RegressionDataset, RegressionModel

    class TwoLosses(HFModule):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.weighting = UncertaintyWeightedLoss(["mse", "l1"])

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(input_x=inputs["input_x"])
            pred = outputs[0]
            loss = self.weighting({"mse": F.mse_loss(pred, inputs["labels"]), "l1": F.l1_loss(pred, inputs["labels"])})
            return (loss, outputs) if return_outputs else loss

    torch.manual_seed(0)
    module = TwoLosses(model=RegressionModel(),
                       optimization=OptimizerSettings(learning_rate=0.05, weight_decay=0.1, optim="adamw_torch"))
    data = HFDataModule(dataset={"train": RegressionDataset()}, batch_size=8, collator="default", validation_size=0,
                        test_size=0)
    trainer = L.Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
                        limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, data)
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 3 and groups[2]["params"] == [module.weighting.log_vars]
    assert groups[2]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 0.1
    assert not torch.equal(module.weighting.log_vars.detach(), torch.zeros(2))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]["weighting.log_vars"]
    torch.testing.assert_close(saved, module.weighting.log_vars.detach())


def test_grouped_settings_and_the_flat_keywords_of_earlier_releases(tmp_path):
    """HFModule groups its optimizer / evaluation / compile settings; the flat keywords still build the same module,
    with a FutureWarning naming each new key; mistakes are TypeErrors that name the key."""
    grouped = _bert(optimization=OptimizerSettings(learning_rate=3e-4, warmup_steps=2),
                    evaluation={"eval_accumulation_steps": 2}, compilation=CompileSettings(torch_compile_scope="blocks"))
    with pytest.warns(FutureWarning, match=r"learning_rate is now optimization\.learning_rate.*"
                                           r"eval_accumulation_steps is now evaluation\.eval_accumulation_steps"):
        flat = _bert(learning_rate=3e-4, warmup_steps=2, eval_accumulation_steps=2, torch_compile_scope="blocks")
    assert dict(flat.hparams) == dict(grouped.hparams)
    assert flat.hparams["optimization"] == {**OptimizerSettings().as_dict(), "learning_rate": 3e-4, "warmup_steps": 2}
    assert "learning_rate" not in flat.hparams  # the groups hold the flat keywords
    for module in (flat, grouped):
        assert module.optim_config["learning_rate"] == 3e-4 and module.warmup_steps == 2
        assert module.eval_accumulation_steps == 2 and module.compile_scope == "blocks"
    with pytest.raises(TypeError, match=r"\['learning_rate'\] given both flat and in optimization"):
        _bert(learning_rate=1e-3, optimization={"learning_rate": 1e-4})
    with pytest.raises(TypeError, match=r"\['learning_rate'\] given both flat and in optimization"):
        _bert(learning_rate=1e-3, optimization=OptimizerSettings(learning_rate=1e-4))
    with pytest.warns(FutureWarning) as caught:
        merged = WithOwnArgument(model=TINY_BERT, num_labels=3, optimization=OptimizerSettings(weight_decay=0.1),
                                 learning_rate=2e-5)
    assert merged.optim_config["learning_rate"] == 2e-5 and merged.optim_config["weight_decay"] == 0.1
    moved = [w for w in caught if w.category is FutureWarning and "flat settings" in str(w.message)]
    assert [w.filename for w in moved] == [__file__]  # it points at the caller's line, not at the subclass's super()
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['learnin_rate'\]"):
        _bert(learnin_rate=1e-3)
    with pytest.raises(TypeError, match=r"optimization: unknown key\(s\) \['learnin_rate'\]"):
        _bert(optimization={"learnin_rate": 1e-3})
    with pytest.raises(ValueError, match=r"compilation.torch_compile_scope='all'"):
        CompileSettings(torch_compile_scope="all")


class WithOwnArgument(HFModule):
    """A subclass that forwards ``**kwargs``, as the task modules do."""

    def __init__(self, own: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.own = own


@pytest.mark.parametrize("cls", [HFModule, WithOwnArgument])
def test_checkpoints_hold_the_groups_and_old_flat_checkpoints_still_load(tmp_path, cls):
    """load_from_checkpoint rebuilds the groups from the checkpoint's hyper-parameters (plain dicts, also in the
    logger's hparams.yaml); a checkpoint written with flat hyper-parameters by an earlier release loads too, for
    HFModule and for a subclass that forwards its keywords."""
    from lightning.pytorch.loggers import CSVLogger

    from tests.helpers.tiny import RegressionModel

    module = cls(model=RegressionModel(), optimization=OptimizerSettings(learning_rate=0.05, warmup_steps=1),
                 compilation=CompileSettings(torch_compile_scope="blocks"))
    trainer, _, _ = fit([], module=module, max_steps=2, logger=CSVLogger(tmp_path))
    path = tmp_path / "grouped.ckpt"
    trainer.save_checkpoint(path)
    loaded = cls.load_from_checkpoint(path, model=RegressionModel())
    assert loaded.optimization == module.optimization and loaded.compile_scope == "blocks"
    hparams = yaml.safe_load((Path(trainer.logger.log_dir) / "hparams.yaml").read_text())
    assert hparams["optimization"]["learning_rate"] == 0.05 and hparams["compilation"]["torch_compile_scope"] == "blocks"

    checkpoint = torch.load(path, weights_only=False)
    hyper = checkpoint["hyper_parameters"]
    for group in ("optimization", "evaluation", "compilation"):
        hyper.update(hyper.pop(group))  # as an earlier release saved them (all init arguments, by name)
    checkpoint["hparams_name"] = "kwargs"
    torch.save(checkpoint, tmp_path / "flat.ckpt")
    with pytest.warns(FutureWarning, match=r"learning_rate is now optimization\.learning_rate"):
        old = cls.load_from_checkpoint(tmp_path / "flat.ckpt", model=RegressionModel())
    assert old.optimization == module.optimization and old.compile_scope == "blocks"
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), loaded.state_dict().values(), strict=True))


def test_a_tokenizer_object_travels_in_the_checkpoint_not_in_the_hyper_parameters(tmp_path):
    """A tokenizer object given with a model spec is not a hyper-parameter (it made hparams.yaml a dump of the
    vocabulary and was pickled again at each fit): hparams record None, and Lightning checkpoints carry its files, so
    load_from_checkpoint restores it with the changes made to it, from a checkpoint that loads with weights_only. A
    tokenizer given to load_from_checkpoint wins."""
    from lightning.pytorch.loggers import CSVLogger

    from hf_lightning.data import resolve_model_path

    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    tokenizer.add_tokens(["<movie-title>"])  # changes a folder reference would lose
    tokenizer.padding_side = "left"
    module = _bert(tokenizer=tokenizer)
    assert module.tokenizer is tokenizer and module.hparams["tokenizer"] is None
    data = HFDataModule(dataset={"train": tiny_text_dataset(16), "validation": tiny_text_dataset(8, seed=1)},
                        batch_size=8, validation_size=0, test_size=0)
    trainer = L.Trainer(max_steps=1, logger=CSVLogger(tmp_path), enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, data)
    hparams_yaml = (Path(trainer.logger.log_dir) / "hparams.yaml").read_text()
    assert yaml.safe_load(hparams_yaml)["tokenizer"] is None and len(hparams_yaml) < 5000
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    torch.load(tmp_path / "m.ckpt", weights_only=True)  # plain data: no pickled objects

    loaded = HFModule.load_from_checkpoint(tmp_path / "m.ckpt")
    assert loaded.tokenizer.get_vocab() == tokenizer.get_vocab() and "<movie-title>" in loaded.tokenizer.get_vocab()
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer("a <movie-title> film")["input_ids"] == tokenizer("a <movie-title> film")["input_ids"]
    other = transformers.AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    assert HFModule.load_from_checkpoint(tmp_path / "m.ckpt", tokenizer=other).tokenizer is other

    # a tokenizer named by a string is a hyper-parameter, as before: nothing extra in the checkpoint
    by_name = _bert(tokenizer="minilm")
    assert by_name.hparams["tokenizer"] == "minilm"
    checkpoint: dict = {}
    by_name.on_save_checkpoint(checkpoint)
    assert checkpoint == {}


def test_fit_setup_aligns_the_models_special_tokens_with_the_tokenizer():
    """The Lightning door does what transformers' train() does (tests/parity/test_checkpoint_parity.py compares the
    HF-style door with transformers): at the fit's setup the tokenizer's pad / eos ids go into the model's config,
    where a GPT-2 classifier needs a pad id to train on padded batches."""
    import tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, **{f"w{i}": i for i in range(3, 16)}}
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]")),
        pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")
    model = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(
        vocab_size=16, n_embd=8, n_layer=1, n_head=2, n_positions=8, num_labels=2))
    assert model.config.pad_token_id is None
    module = HFModule(model=model, tokenizer=tokenizer)
    module.setup("validate")
    assert model.config.pad_token_id is None  # only training aligns, as transformers' train()
    module.setup("fit")
    assert (model.config.pad_token_id, model.config.eos_token_id) == (0, 2)
