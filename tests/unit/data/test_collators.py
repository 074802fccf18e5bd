"""The padding collators (hf_lightning/data/collators.py) against transformers' own, run beside them on the same
examples: the same batch (keys, key order, dtypes, values) or the same error, whether the numpy path pads or
transformers' code does."""

from __future__ import annotations

import copy
import random
import time

import numpy as np
import pytest
import torch
import transformers

from hf_lightning.data import build_collator, resolve_model_path
from hf_lightning.data.collators import PaddingCollator, TokenClassificationCollator, pad_batch

TEXTS = ["a film", "the best film of the year, by far", "dull", "I liked the actors but not the plot at all",
         "fine", "what a long and winding story this one tells, from start to finish"]


@pytest.fixture(scope="module")
def base_tokenizer():
    return transformers.AutoTokenizer.from_pretrained(resolve_model_path("minilm"))


def _tokenizer(base, side="right", names=None):
    tok = copy.deepcopy(base)
    tok.padding_side = side
    if names is not None:
        tok.model_input_names = names
    return tok


def _examples(tok, *, label=0, mask=True, special=False, n=6):
    rows = []
    for i in range(n):
        enc = tok(TEXTS[i % len(TEXTS)], return_special_tokens_mask=special)
        row = dict(enc)
        if not mask:
            row.pop("attention_mask", None)
        if label is not None:
            row["label"] = label(i) if callable(label) else label
        rows.append(row)
    return rows


def _outcome(collator, features):
    """The batch as (key, dtype, values) triples in order, or the exception's type."""
    try:
        batch = collator(copy.deepcopy(features))
    except Exception as exc:  # noqa: BLE001 - the outcome compared is the error itself
        return type(exc)
    return [(key, value.dtype, value.tolist()) for key, value in batch.items()]


PADDING_CASES = {
    "right, int labels": ({}, {}, {"label": lambda i: i % 2}),
    "left padding": ({"side": "left"}, {}, {}),
    "no attention mask in the examples": ({}, {}, {"mask": False}),
    "float labels (regression)": ({}, {}, {"label": lambda i: i / 4}),
    "no labels": ({}, {}, {"label": None}),
    "special tokens mask": ({}, {}, {"special": True}),
    "pad_to_multiple_of": ({}, {"pad_to_multiple_of": 8}, {}),
    "max_length": ({"side": "left"}, {"padding": "max_length", "max_length": 24}, {}),
    "a model without token types or mask": ({"names": ["input_ids"]}, {}, {"mask": False}),
    "a model without token types": ({"names": ["input_ids", "attention_mask"]}, {}, {}),
}


@pytest.mark.parametrize("case", PADDING_CASES)
def test_padding_gives_transformers_batch(base_tokenizer, case):
    tok_kw, coll_kw, ex_kw = PADDING_CASES[case]
    tok = _tokenizer(base_tokenizer, **tok_kw)
    features = _examples(tok, **ex_kw)
    assert pad_batch(tok, features, coll_kw.get("padding", True), coll_kw.get("max_length"),
                     coll_kw.get("pad_to_multiple_of")) is not None  # the numpy path did the work
    ours = _outcome(build_collator("padding", tok, **coll_kw), features)
    theirs = _outcome(transformers.DataCollatorWithPadding(tok, **coll_kw), features)
    assert ours == theirs
    assert isinstance(ours, list) and ours[-1][0] in ("labels", "attention_mask")


def test_label_ids_are_renamed_as_transformers_does(base_tokenizer):
    features = [{**row, "label_ids": i} for i, row in enumerate(_examples(base_tokenizer, label=None))]
    ours = _outcome(PaddingCollator(base_tokenizer), features)
    assert ours == _outcome(transformers.DataCollatorWithPadding(base_tokenizer), features)
    assert [key for key, _, _ in ours] == ["input_ids", "token_type_ids", "attention_mask", "labels"]


def _mutations(tok):
    """Inputs the numpy path leaves to transformers: each gives transformers' batch or transformers' error."""
    base = _examples(tok)
    yield "rows as tensors", [{k: torch.tensor(v) for k, v in row.items()} for row in base], {}
    yield "rows as arrays", [{k: np.asarray(v) for k, v in row.items()} for row in base], {}
    yield "a ragged extra list", [{**row, "extra": [1] * (i + 1)} for i, row in enumerate(base)], {}
    yield "an equal-length extra list", [{**row, "extra": [1, 2]} for row in base], {}
    yield "float ids", [{**row, "input_ids": [float(t) for t in row["input_ids"]]} for row in base], {}
    yield "token types of another length", [{**row, "token_type_ids": row["token_type_ids"][:-1]} for row in base], {}
    yield "a row longer than max_length", base, {"padding": "max_length", "max_length": 4}
    yield "no padding", base, {"padding": False}
    yield "max_length beside padding=True", base, {"max_length": 32}
    yield "a missing key", base[:-1] + [{k: v for k, v in base[-1].items() if k != "token_type_ids"}], {}
    yield "empty rows", [{"input_ids": [], "attention_mask": []} for _ in base], {}
    yield "numpy integers", [{**row, "input_ids": [np.int64(t) for t in row["input_ids"]]} for row in base], {}
    yield "a tuple row to pad", base[:-1] + [{**base[-1], "input_ids": tuple(base[-1]["input_ids"])}], {}
    yield "pad_to_multiple_of=0", base, {"pad_to_multiple_of": 0}
    yield "a float max_length", base, {"padding": "max_length", "max_length": 40.0}


def test_inputs_left_to_transformers_give_its_batch_or_its_error(base_tokenizer):
    outcomes = {}
    for name, features, coll_kw in _mutations(base_tokenizer):
        assert pad_batch(base_tokenizer, features, coll_kw.get("padding", True), coll_kw.get("max_length"),
                         coll_kw.get("pad_to_multiple_of")) is None, name
        ours = _outcome(PaddingCollator(base_tokenizer, **coll_kw), features)
        assert ours == _outcome(transformers.DataCollatorWithPadding(base_tokenizer, **coll_kw), features), name
        outcomes[name] = ours
    assert isinstance(outcomes["rows as tensors"], list) and outcomes["a ragged extra list"] is ValueError

    strings = [{**row, "label": "pos"} for row in _examples(base_tokenizer)]  # BatchEncoding refuses it in both
    assert _outcome(PaddingCollator(base_tokenizer), strings) == ValueError
    assert _outcome(transformers.DataCollatorWithPadding(base_tokenizer), strings) == ValueError

    class LeftPadding(type(base_tokenizer)):  # a tokenizer that pads its own way keeps its way
        def pad(self, *args, **kwargs):
            return super().pad(*args, **{**kwargs, "padding_side": "left"})

    own = LeftPadding.from_pretrained(resolve_model_path("minilm"))
    features = _examples(own)
    assert pad_batch(own, features) is None
    assert _outcome(PaddingCollator(own), features) == _outcome(transformers.DataCollatorWithPadding(own), features)
    assert _outcome(PaddingCollator(own), features)[0][2][0][0] == own.pad_token_id

    no_pad = _tokenizer(base_tokenizer)
    no_pad.pad_token = None
    features = _examples(no_pad)
    assert pad_batch(no_pad, features) is None
    assert _outcome(PaddingCollator(no_pad), features) == _outcome(transformers.DataCollatorWithPadding(no_pad),
                                                                   features) == ValueError


TOKEN_CASES = {
    "right": ({}, {}, "labels"),
    "left": ({"side": "left"}, {}, "labels"),
    "label column": ({}, {}, "label"),
    "pad_to_multiple_of, other pad id": ({}, {"pad_to_multiple_of": 8, "label_pad_token_id": -1}, "labels"),
    "max_length": ({"side": "left"}, {"padding": "max_length", "max_length": 20}, "labels"),
    "no labels": ({}, {}, None),
}


@pytest.mark.parametrize("case", TOKEN_CASES)
def test_token_classification_gives_transformers_batch(base_tokenizer, case):
    tok_kw, coll_kw, label_name = TOKEN_CASES[case]
    tok = _tokenizer(base_tokenizer, **tok_kw)
    rng = random.Random(0)
    features = _examples(tok, label=None)
    if label_name:
        for row in features:
            row[label_name] = [rng.choice([-100, 0, 1, 2]) for _ in row["input_ids"]]
    ours_collator = build_collator("token_classification", tok, **coll_kw)
    assert isinstance(ours_collator, TokenClassificationCollator)
    assert ours_collator._fast(copy.deepcopy(features)) is not None  # the numpy path did the work
    ours = _outcome(ours_collator, features)
    assert ours == _outcome(transformers.DataCollatorForTokenClassification(tok, **coll_kw), features)
    assert isinstance(ours, list)


def test_token_classification_leaves_other_labels_to_transformers(base_tokenizer):
    features = _examples(base_tokenizer, label=None)
    cases = (("tensor", torch.tensor, {}), ("longer than the inputs", lambda ids: list(ids) + [0, 0], {}),
             ("no pad id", list, {"label_pad_token_id": None}))
    for kind, make, coll_kw in cases:
        rows = [{**row, "labels": make([0] * len(row["input_ids"]))} for row in features]
        collator = TokenClassificationCollator(base_tokenizer, **coll_kw)
        assert collator._fast(copy.deepcopy(rows)) is None, kind
        theirs = transformers.DataCollatorForTokenClassification(base_tokenizer, **coll_kw)
        assert _outcome(collator, rows) == _outcome(theirs, rows), kind


def test_the_numpy_path_takes_a_fraction_of_transformers_time(base_tokenizer):
    """A batch of 64 examples: the CPU time of each, best of five, measured in turns in this process."""
    features = _examples(base_tokenizer, label=lambda i: i % 2, n=64)
    ours, theirs = PaddingCollator(base_tokenizer), transformers.DataCollatorWithPadding(base_tokenizer)
    best = {"ours": float("inf"), "theirs": float("inf")}
    for _ in range(5):
        for name, collator in (("ours", ours), ("theirs", theirs)):
            start = time.process_time()
            for _ in range(20):
                collator(features)
            best[name] = min(best[name], time.process_time() - start)
    assert best["ours"] < 0.5 * best["theirs"], best
