"""HFModule's evaluation (hf_lightning/modules/evaluation.py): prediction_step as transformers.Trainer's."""

from __future__ import annotations

import torch

from tests.unit.modules.helpers import _bert


def test_prediction_step_returns_loss_logits_labels():
    module = _bert()
    module.model.eval()
    inputs = {"input_ids": torch.randint(1, 100, (2, 4)), "labels": torch.tensor([0, 2])}
    loss, logits, labels = module.prediction_step(module.model, inputs, prediction_loss_only=False)
    assert loss.ndim == 0 and logits.shape == (2, 3) and torch.equal(labels, inputs["labels"])
    assert module.prediction_step(module.model, inputs, prediction_loss_only=True)[1:] == (None, None)


def test_an_evaluation_starts_from_empty_metrics():
    """Whatever a pass that ended early left in the metrics (a sanity check, an evaluation stopped by an error) is
    not counted in the next evaluation."""
    import lightning as L

    from hf_lightning import HFDataModule
    from tests.helpers.tiny import tiny_text_dataset

    def validate(module):
        data = HFDataModule(dataset={"train": tiny_text_dataset(8), "validation": tiny_text_dataset(24, seed=1)},
                            tokenizer="minilm", batch_size=8, validation_size=0, test_size=0)
        trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
        return trainer.validate(module, datamodule=data, verbose=False)[0]["eval_accuracy"]

    clean = validate(_bert(metrics=["accuracy"]))
    left_over = _bert(metrics=["accuracy"])
    left_over.val_metrics.update(torch.ones(1000, dtype=torch.long), torch.ones(1000, dtype=torch.long))  # all right
    assert validate(left_over) == clean


def test_validate_without_a_logger_returns_the_metrics_without_a_warning_per_key():
    """A notebook's Trainer(logger=False): validate() and test() return every metric, and Lightning's "no logger
    configured" warning, once per key, is not shown."""
    import warnings

    import lightning as L

    from hf_lightning import HFDataModule, HFModule
    from tests.helpers.tiny import TINY_BERT

    module = HFModule(model=TINY_BERT, tokenizer="minilm", num_labels=2, metrics=["accuracy"])
    data = HFDataModule(dataset="movie_reviews", tokenizer="minilm", batch_size=16, max_train_samples=32,
                        max_eval_samples=16)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validated = trainer.validate(module, data, verbose=False)[0]
        tested = trainer.test(module, data, verbose=False)[0]
    assert {"eval_loss", "eval_accuracy", "eval_runtime"} <= set(validated)
    assert {"test_loss", "test_accuracy"} <= set(tested)
    assert not [w for w in caught if "self.log" in str(w.message)]
