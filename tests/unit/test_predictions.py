"""The files ``python -m hf_lightning predict`` writes for each task (`hf_lightning.predictions`)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from transformers import AutoTokenizer
from transformers.trainer_utils import PredictionOutput

from hf_lightning.modules.loading import resolve_model_path
from hf_lightning.predictions import write_predictions


def _module(task, problem_type=None, id2label=None, tokenizer=None, generate=False):
    config = SimpleNamespace(problem_type=problem_type, id2label=id2label or {})
    return SimpleNamespace(task=task, model=SimpleNamespace(config=config), tokenizer_to_save=tokenizer,
                           predict_with_generate=generate)


def test_classification_writes_label_names_and_every_array(tmp_path):
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]], dtype=np.float32)
    output = PredictionOutput(logits, np.array([1, 0, 0]), {})
    written = write_predictions(str(tmp_path), _module("sequence-classification", id2label={0: "neg", 1: "pos"}),
                                output)
    assert [p.rsplit("/", 1)[1] for p in written] == ["predictions.npz", "predictions.txt"]
    assert (tmp_path / "predictions.txt").read_text() == "index\tprediction\n0\tpos\n1\tneg\n2\tpos\n"
    unnamed = _module("sequence-classification", id2label={0: "LABEL_0", 1: "LABEL_1"})  # transformers' placeholders
    write_predictions(str(tmp_path / "unnamed"), unnamed, output)
    assert (tmp_path / "unnamed" / "predictions.txt").read_text() == "index\tprediction\n0\t1\n1\t0\n2\t1\n"
    saved = np.load(tmp_path / "predictions.npz")
    np.testing.assert_array_equal(saved["predictions"], logits)
    np.testing.assert_array_equal(saved["label_ids"], [1, 0, 0])


def test_regression_writes_values_and_a_tuple_of_outputs_is_kept_whole(tmp_path):
    output = PredictionOutput(np.array([[0.12345], [2.5]]), None, {})
    write_predictions(str(tmp_path), _module("sequence-classification", problem_type="regression"), output)
    assert (tmp_path / "predictions.txt").read_text() == "index\tprediction\n0\t0.123\n1\t2.500\n"
    start, end = np.zeros((2, 5)), np.ones((2, 5))
    write_predictions(str(tmp_path / "qa"), _module("question-answering"), PredictionOutput((start, end), None, {}))
    saved = np.load(tmp_path / "qa" / "predictions.npz")
    assert sorted(saved) == ["predictions_0", "predictions_1"]
    np.testing.assert_array_equal(saved["predictions_1"], end)
    assert not (tmp_path / "qa" / "predictions.txt").exists()  # no text form for spans


def test_token_classification_writes_the_labelled_tokens_names(tmp_path):
    logits = np.zeros((2, 4, 3))
    logits[0, :, 2] = 1  # every token predicted B-LOC
    logits[1, :, 0] = 1  # every token predicted O
    labels = np.array([[-100, 0, 2, -100], [-100, 1, -100, -100]])
    write_predictions(str(tmp_path), _module("token-classification", id2label={0: "O", 1: "B-PER", 2: "B-LOC"}),
                      PredictionOutput(logits, labels, {}))
    assert (tmp_path / "predictions.txt").read_text() == "B-LOC B-LOC\nO\n"


def test_generated_ids_are_decoded_one_text_per_line(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    texts = ["a short summary", "another, longer summary of the text"]
    rows = [tokenizer(t)["input_ids"] for t in texts]
    ids = np.full((2, max(map(len, rows))), -100)  # generation pads with -100 across batches
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
    write_predictions(str(tmp_path), _module("seq2seq-lm", tokenizer=tokenizer, generate=True),
                      PredictionOutput(ids, None, {}))
    assert (tmp_path / "generated_predictions.txt").read_text().splitlines() == texts
