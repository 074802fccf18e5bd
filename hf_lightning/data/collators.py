"""Collators chosen by name: transformers' own collators, built with the tokenizer and the caller's kwargs.

The two padding collators tokenised text uses by default (``padding``, ``token_classification``) are transformers'
classes with one change: when every example holds lists of ints, the batch is padded in one numpy pass per key instead
of example by example in Python (about a fifth of the CPU time for a batch of 64, docs/fast.md). The batch is the
same: keys, key order, values and dtypes. Any other input (tensors, arrays, floats, nested lists, a missing pad token,
a tokenizer that pads its own way, padding strategies other than longest / max_length) goes to transformers' own
code, which decides, errors included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import torch
import transformers
from transformers.tokenization_utils_base import BatchEncoding, PreTrainedTokenizerBase
from transformers.utils import PaddingStrategy

#: Keys transformers' ``tokenizer.pad`` pads besides the model's main input, with their pad values (None: the
#: tokenizer's ``pad_token_type_id``).
_PADDED_KEYS: dict[str, int | None] = {"attention_mask": 0, "token_type_ids": None, "special_tokens_mask": 1}


def _lengths(rows: Sequence[Any], kinds: type | tuple[type, ...] = list) -> np.ndarray | None:
    """Each row's length, or None where a row is not of ``kinds`` (transformers' code then decides: it pads lists;
    a tuple that needs padding is its error)."""
    if not all(isinstance(row, kinds) for row in rows):
        return None
    return np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))


def _filled(lengths: np.ndarray, width: int, left: bool) -> np.ndarray:
    """Where the rows' values go in a (rows, width) batch padded on the left or the right."""
    positions = np.arange(width)
    return positions >= (width - lengths)[:, None] if left else positions < lengths[:, None]


def _padded(rows: Sequence[Any], lengths: np.ndarray, width: int, value: int, left: bool) -> torch.Tensor | None:
    """Rows of ints padded with ``value`` to ``width``, as one int64 tensor; None unless every value is an int."""
    try:
        flat = np.array(list(chain.from_iterable(rows)))
    except (TypeError, ValueError):
        return None
    if flat.ndim != 1 or (flat.size and flat.dtype.kind != "i") or lengths.max(initial=0) > width:
        return None
    out = np.full((len(rows), width), value, dtype=np.int64)
    out[_filled(lengths, width, left)] = flat
    return torch.from_numpy(out)


def _width(padding: Any, max_length: int | None, longest: int, pad_to_multiple_of: int | None) -> int | None:
    """The padded length transformers' ``tokenizer.pad`` chooses; None for the cases left to it."""
    if not all(v is None or (type(v) is int and v > 0) for v in (max_length, pad_to_multiple_of)):
        return None  # zero, negative or float lengths: transformers' error
    if padding is True or padding in ("longest", PaddingStrategy.LONGEST):
        if max_length is not None:
            return None  # transformers warns that max_length is ignored: let it
        width = longest
    elif padding in ("max_length", PaddingStrategy.MAX_LENGTH) and max_length is not None:
        width = max_length
    else:
        return None
    if pad_to_multiple_of and width % pad_to_multiple_of:
        width = (width // pad_to_multiple_of + 1) * pad_to_multiple_of
    return width if width >= longest else None


def _pads_as_transformers(tokenizer: Any) -> bool:
    """Whether ``tokenizer.pad`` is transformers' own (a class that overrides ``pad`` or ``_pad`` pads its way)."""
    cls = type(tokenizer)
    return (isinstance(tokenizer, PreTrainedTokenizerBase) and cls.pad is PreTrainedTokenizerBase.pad
            and cls._pad is PreTrainedTokenizerBase._pad)


def _first_value_is_int(rows: Sequence[list]) -> bool:
    """transformers' ``tokenizer.pad`` reads the first value of the first non-empty row: other than a Python int
    (a numpy integer, say) it converts the rows or refuses them, so those are left to it."""
    first = next((row[0] for row in rows if row), None)
    return first is None or isinstance(first, int)


def pad_batch(tokenizer: Any, features: Any, padding: Any = True, max_length: int | None = None,
              pad_to_multiple_of: int | None = None) -> BatchEncoding | None:
    """``tokenizer.pad(features, padding=..., return_tensors="pt")`` for examples holding lists of ints.

    Returns the `BatchEncoding` transformers builds (same keys in the same order, int64 tensors, an attention mask
    added where the tokenizer's model takes one; other keys converted by `BatchEncoding` itself), or None where the
    input is anything else, for transformers' ``tokenizer.pad`` to handle.
    """
    names = getattr(tokenizer, "model_input_names", None)
    side = getattr(tokenizer, "padding_side", None)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if (not _pads_as_transformers(tokenizer) or not names or pad_id is None or side not in ("left", "right")
            or not isinstance(features, (list, tuple)) or not features
            or not all(isinstance(f, Mapping) for f in features)):
        return None
    main, keys, wants_mask = names[0], list(features[0].keys()), "attention_mask" in names
    if main not in keys or ("attention_mask" in keys and not wants_mask):
        return None
    try:
        columns = {key: [f[key] for f in features] for key in keys}
    except KeyError:
        return None
    main_lengths = _lengths(columns[main])
    if main_lengths is None or not _first_value_is_int(columns[main]):
        return None
    width = _width(padding, max_length, int(main_lengths.max()), pad_to_multiple_of)
    if not width:
        return None
    left = side == "left"
    batch: dict[str, Any] = {}
    for key, values in columns.items():
        if key == main or key in _PADDED_KEYS:
            value = pad_id if key == main else _PADDED_KEYS[key]
            lengths = _lengths(values)
            if lengths is None or not np.array_equal(lengths, main_lengths):
                return None
            tensor = _padded(values, lengths, width, tokenizer.pad_token_type_id if value is None else value, left)
            if tensor is None:
                return None
            batch[key] = tensor
        elif any(isinstance(v, (list, tuple, np.ndarray, torch.Tensor)) for v in values):
            return None  # transformers does not pad it; its tensor conversion decides
        else:
            batch[key] = values
    if wants_mask and "attention_mask" not in batch:
        batch["attention_mask"] = torch.from_numpy(_filled(main_lengths, width, left).astype(np.int64))
    return BatchEncoding(batch, tensor_type="pt")


class PaddingCollator(transformers.DataCollatorWithPadding):
    """transformers' ``DataCollatorWithPadding`` (same arguments, same batches), padding lists of ints with
    `pad_batch`."""

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        batch = None
        if self.return_tensors == "pt":
            batch = pad_batch(self.tokenizer, features, self.padding, self.max_length, self.pad_to_multiple_of)
        if batch is None:
            return super().__call__(features)
        for name in ("label", "label_ids"):  # transformers' renaming
            if name in batch:
                batch["labels"] = batch.pop(name)
        return batch


class TokenClassificationCollator(transformers.DataCollatorForTokenClassification):
    """transformers' ``DataCollatorForTokenClassification`` (same arguments, same batches): inputs padded with
    `pad_batch`, labels with ``label_pad_token_id`` on the tokenizer's padding side."""

    def torch_call(self, features: list[dict[str, Any]]) -> Any:
        batch = self._fast(features)
        return super().torch_call(features) if batch is None else batch

    def _fast(self, features: list[dict[str, Any]]) -> Any:
        if not features or not all(isinstance(f, Mapping) for f in features) or type(self.label_pad_token_id) is not int:
            return None
        label_name = "label" if "label" in features[0] else "labels"
        if label_name not in features[0]:
            return pad_batch(self.tokenizer, features, self.padding, self.max_length, self.pad_to_multiple_of)
        labels = [f.get(label_name) for f in features]
        inputs = [{k: v for k, v in f.items() if k != label_name} for f in features]
        batch = pad_batch(self.tokenizer, inputs, self.padding, self.max_length, self.pad_to_multiple_of)
        lengths = _lengths(labels, (list, tuple))  # transformers pads list(label)
        if batch is None or lengths is None or "input_ids" not in batch:
            return None
        padded = _padded(labels, lengths, batch["input_ids"].shape[1], self.label_pad_token_id,
                         self.tokenizer.padding_side == "left")
        if padded is None:
            return None
        batch[label_name] = padded
        return batch


def trainer_default_collator(processing_class: Any) -> Callable[..., Any]:
    """transformers.Trainer's default collator: dynamic padding with a tokenizer or a sequence feature extractor
    (`PaddingCollator`, transformers' batches), else ``default_data_collator``."""
    from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor

    if isinstance(processing_class, (PreTrainedTokenizerBase, SequenceFeatureExtractor)):
        return PaddingCollator(processing_class)
    return transformers.default_data_collator


def _no_tokenizer(factory: Callable[..., Any]) -> Callable[..., Any]:
    def build(tokenizer: Any, **kwargs: Any) -> Any:
        return factory(**kwargs) if kwargs else factory

    return build


#: name -> builder(tokenizer, **kwargs). Dynamic padding ("padding") is the default for tokenised text.
COLLATORS: dict[str, Callable[..., Any]] = {
    "padding": lambda tok, **kw: PaddingCollator(tok, **kw),
    "token_classification": lambda tok, **kw: TokenClassificationCollator(tok, **kw),
    "language_modeling": lambda tok, **kw: transformers.DataCollatorForLanguageModeling(tok, **kw),
    "whole_word_mask": lambda tok, **kw: transformers.DataCollatorForWholeWordMask(tok, **kw),
    "seq2seq": lambda tok, **kw: transformers.DataCollatorForSeq2Seq(tok, **kw),
    "default": _no_tokenizer(transformers.default_data_collator),
}


def build_collator(name: str | Callable[..., Any] | None, tokenizer: Any, **kwargs: Any) -> Callable[..., Any]:
    """Returns a collator: a callable is used as is; a name is looked up in `COLLATORS`.

    Args:
        name: A key of `COLLATORS`, a callable, or None (dynamic padding with a tokenizer, else the default collator).
        tokenizer: The tokenizer the padding collators pad with.
        **kwargs: Passed to the collator's constructor (e.g. ``pad_to_multiple_of``, ``mlm_probability``).
    """
    if callable(name):
        return name
    if name is None:
        name = "padding" if tokenizer is not None else "default"
    if name not in COLLATORS:
        raise ValueError(f"Unknown collator '{name}'. Choose one of {sorted(COLLATORS)} or pass a callable.")
    if name != "default" and tokenizer is None:
        raise ValueError(f"collator='{name}' pads with a tokenizer, but none is known: set data.tokenizer.")
    return COLLATORS[name](tokenizer, **kwargs)
