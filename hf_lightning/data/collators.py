"""Collators chosen by name: transformers' own collators, built with the tokenizer and the caller's kwargs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import transformers


def _no_tokenizer(factory: Callable[..., Any]) -> Callable[..., Any]:
    def build(tokenizer: Any, **kwargs: Any) -> Any:
        return factory(**kwargs) if kwargs else factory

    return build


#: name -> builder(tokenizer, **kwargs). Dynamic padding ("padding") is the default for tokenised text.
COLLATORS: dict[str, Callable[..., Any]] = {
    "padding": lambda tok, **kw: transformers.DataCollatorWithPadding(tok, **kw),
    "token_classification": lambda tok, **kw: transformers.DataCollatorForTokenClassification(tok, **kw),
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
