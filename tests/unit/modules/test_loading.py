"""Model loading (hf_lightning/modules/loading.py): Liger's kernels refused before training where they cannot run."""

from __future__ import annotations

import pytest
import torch

from hf_lightning import HFModule


def test_liger_kernels_are_refused_before_training_where_they_cannot_run(tmp_path, monkeypatch):
    """use_liger_kernel without the package: transformers' ImportError, with the install line; with the package but
    without CUDA: an error that says so when the module is built (both doors), before any step."""
    from hf_lightning import Trainer, TrainingArguments
    from tests.helpers.tiny import TINY_BERT, RegressionDataset, RegressionModel

    monkeypatch.setattr("transformers.utils.is_liger_kernel_available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install 'hf_lightning\[liger\]'"):
        HFModule(model=dict(TINY_BERT), num_labels=2, use_liger_kernel=True)
    monkeypatch.setattr("transformers.utils.is_liger_kernel_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="use_liger_kernel=True: Liger's kernels are Triton kernels for CUDA GPUs"):
        HFModule(model=dict(TINY_BERT), num_labels=2, use_liger_kernel=True)
    args = TrainingArguments(str(tmp_path), use_liger_kernel=True, report_to=[], use_cpu=True, max_steps=2)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset())
    with pytest.raises(ValueError, match="no CUDA device is visible"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_a_tokenizer_found_nowhere_is_named_with_the_setting_to_change():
    """A tokenizer name that is not packaged, not a folder and not a Hub id reachable from here: the model's and the
    data module's settings are each named, as a model name's are (not a raw Hub error)."""
    from hf_lightning import HFDataModule
    from tests.helpers.tiny import TINY_BERT

    with pytest.raises(ValueError, match=r"tokenizer='minilm x' is not a packaged model .*Set HFModule's `tokenizer` "
                                         r"\(--model.tokenizer in the CLI\)"):
        HFModule(model=dict(TINY_BERT), tokenizer="minilm x", num_labels=2)
    with pytest.raises(ValueError, match=r"tokenizer='minilm x' is not a packaged model .*Set the data module's "
                                         r"`tokenizer` \(--data.tokenizer in the CLI\)"):
        HFDataModule(dataset="movie_reviews", tokenizer="minilm x").resolve_tokenizer()
