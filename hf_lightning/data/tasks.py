"""Task data modules: `HFDataModule` subclasses that override ``preprocess`` (and pick the task's collator).

- `TokenClassificationDataModule`: word tags aligned to sub-words as in HF's ``run_ner.py``.
- `LanguageModelingDataModule`: causal or masked LM, texts concatenated and cut into blocks as in ``run_clm.py`` /
  ``run_mlm.py`` (or one example per line); labels and masks come from ``DataCollatorForLanguageModeling``.
- `Seq2SeqDataModule`: source / target pairs as in ``run_summarization.py``, batched by ``DataCollatorForSeq2Seq``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from itertools import chain
from typing import Any

import datasets
import transformers

from hf_lightning.data.builtin import DATASETS
from hf_lightning.data.collators import TokenClassificationCollator
from hf_lightning.data.datamodule import HFDataModule


def align_labels_with_tokens(
    word_ids: list[int | None], word_labels: list[int], label_all_tokens: bool = False,
    b_to_i_label: list[int] | None = None,
) -> list[int]:
    """Sub-word labels from word labels, the rule of HF's ``run_ner.py`` (``tokenize_and_align_labels``).

    Special tokens get -100; the first piece of a word gets the word's label; later pieces get -100, or with
    ``label_all_tokens`` the word's label with ``B-`` turned into ``I-`` (``b_to_i_label[label]``).

    Args:
        word_ids: ``BatchEncoding.word_ids(i)`` of one example (None for special tokens).
        word_labels: The example's label id per word.
        label_all_tokens: Label every piece of a word instead of only the first.
        b_to_i_label: Maps each label id to the id used for continuation pieces (identity when None).
    """
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(-100)
        elif word != previous:
            labels.append(word_labels[word])
        elif label_all_tokens:
            label = word_labels[word]
            labels.append(b_to_i_label[label] if b_to_i_label else label)
        else:
            labels.append(-100)
        previous = word
    return labels


def b_to_i_labels(label_names: list[str]) -> list[int]:
    """For each label id, the id of its ``I-`` twin when it is a ``B-`` label (as ``run_ner.py``), else itself."""
    index = {name: i for i, name in enumerate(label_names)}
    return [index.get("I-" + name[2:], i) if name.startswith("B-") else i for i, name in enumerate(label_names)]


def _columns(kwargs: dict[str, Any], text_default: str | None, label_default: str | None) -> tuple[Any, Any]:
    """(text, label) columns: the ones given, else the packaged data set's, else the task's defaults."""
    dataset = kwargs.get("dataset")
    builtin = DATASETS.get(dataset) if isinstance(dataset, str) else None
    text = kwargs.get("text_column") or (builtin.text_column if builtin else text_default)
    label = kwargs.get("label_column") or (builtin.label_column if builtin else label_default)
    return text, label


def _require_tokenizer(module: HFDataModule, what: str) -> Any:
    tokenizer = module.resolve_tokenizer()
    if tokenizer is None:
        raise ValueError(f"{type(module).__name__} tokenises {what}, but no tokenizer is known: set data.tokenizer "
                         "or model.tokenizer (e.g. minilm).")
    return tokenizer


def _require_column(ds: datasets.Dataset, field: str, column: str | None, split: str) -> str:
    if column is None or column not in ds.column_names:
        raise ValueError(f"data.{field}={column!r} is not a column of the {split} split. Columns: {ds.column_names}. "
                         f"Set --data.{field} to one of them.")
    return column


class _NoClasses:
    """Data modules of tasks without classes (language modelling, generation): nothing to link into the model."""

    @property
    def id2label(self) -> None:
        return None

    @property
    def num_labels(self) -> None:
        return None


class TokenClassificationDataModule(HFDataModule):
    """Word-level tags (NER, POS, chunks) aligned to sub-word tokens, batched by ``DataCollatorForTokenClassification``.

    ``text_column`` holds the words of each example (a list of strings; default ``tokens``) and ``label_column`` their
    tags (default ``ner_tags``): ``ClassLabel`` ids (names from the feature) or strings (ids in sorted order, as HF's
    ``run_ner.py``). ``max_length`` truncates in sub-word tokens.

    Args:
        label_all_tokens: Label every sub-word of a word (continuation pieces get the ``I-`` tag of a ``B-`` word)
            instead of only the first one (the others get -100 and are ignored by the loss and the metrics).
        **kwargs: `HFDataModule` arguments (``dataset``, ``max_length``, ``batch_size``...).
    """

    def __init__(self, label_all_tokens: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label_all_tokens = label_all_tokens
        self.text_column, self.label_column = _columns(kwargs, "tokens", "ner_tags")

    def _tag_names(self) -> list[str] | None:
        feature = self._label_feature()
        if isinstance(feature, datasets.ClassLabel):
            return list(feature.names)
        train = self.raw_splits().get("train")
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            return sorted(set(chain.from_iterable(train[self.label_column])))  # run_ner's get_label_list
        return None

    @property
    def id2label(self) -> dict[int, str] | None:
        """Tag names by id (``ClassLabel`` names, or the sorted string tags); None for plain integer tags."""
        names = self._tag_names()
        return dict(enumerate(names)) if names else None

    @property
    def num_labels(self) -> int | None:
        """Number of tags."""
        names = self._tag_names()
        if names:
            return len(names)
        train = self.raw_splits().get("train")
        if not isinstance(train, datasets.Dataset) or self.label_column not in train.column_names:
            return None
        return int(max(chain.from_iterable(train[self.label_column]), default=0)) + 1

    def preprocess(self, ds: datasets.Dataset, split: str) -> datasets.Dataset:
        """Tokenises pre-split words (``is_split_into_words``) and aligns their tags with `align_labels_with_tokens`."""
        tokenizer = _require_tokenizer(self, "words")
        if not tokenizer.is_fast:
            raise ValueError("Token classification needs a fast tokenizer (word_ids); set data.tokenizer to one.")
        words = _require_column(ds, "text_column", self.text_column, split)
        tags = self.label_column if self.label_column in ds.column_names else None
        if tags is None and split != "predict":
            _require_column(ds, "label_column", self.label_column, split)
        names = self._tag_names()
        string_tags = names is not None and not isinstance(self._label_feature(), datasets.ClassLabel)
        label2id = {name: i for i, name in enumerate(names)} if names else None
        b_to_i = b_to_i_labels(names) if names and self.label_all_tokens else None
        max_length = self.resolve_max_length(tokenizer)

        def tag_ids(row: list[Any]) -> list[int]:
            if not string_tags:
                return row
            unknown = sorted(set(row) - set(label2id))
            if unknown:
                raise ValueError(f"The {split} split has tags {unknown} that the train split lacks ({names}); "
                                 "use the same tag set in every split.")
            return [label2id[t] for t in row]

        def encode(batch: dict[str, list]) -> dict[str, Any]:
            out = tokenizer(batch[words], is_split_into_words=True, truncation=True, max_length=max_length,
                            padding="max_length" if self.padding == "max_length" else False)
            if tags is not None:
                out["labels"] = [align_labels_with_tokens(out.word_ids(i), tag_ids(row), self.label_all_tokens, b_to_i)
                                 for i, row in enumerate(batch[tags])]
            return out

        drop = [c for c in (words, tags) if c is not None]
        return ds.map(encode, batched=True, remove_columns=drop, num_proc=self.preprocessing_num_workers,
                      desc=f"Tokenizing and aligning {split}")

    def _validate_labels(self, ds: Any, split: str) -> None:
        module = self.attached_module()
        num_labels = getattr(getattr(getattr(module, "model", None), "config", None), "num_labels", None)
        if not isinstance(ds, datasets.Dataset) or "labels" not in ds.column_names or num_labels is None:
            return
        values = set(chain.from_iterable(ds["labels"])) - {-100}
        bad = sorted(v for v in values if not 0 <= v < num_labels)
        if bad:
            raise ValueError(f"The {split} split has tag ids {bad[:10]} outside [0, {num_labels}) (the model's "
                             f"num_labels). Set --model.num_labels to {max(values) + 1} or fix data.label_column.")

    @property
    def collate_fn(self) -> Callable[..., Any]:
        """``DataCollatorForTokenClassification`` (labels padded with -100; `TokenClassificationCollator`, the same
        batches) unless ``collator`` names another."""
        if self._collate is None and self.collator is None:
            self._collate = TokenClassificationCollator(
                self.resolve_tokenizer(), pad_to_multiple_of=self.pad_to_multiple_of, **self.collator_kwargs)
        return super().collate_fn


class LanguageModelingDataModule(_NoClasses, HFDataModule):
    """Raw text for causal or masked language modelling, batched by ``DataCollatorForLanguageModeling``.

    By default every text is tokenised, all are concatenated, and the stream is cut into blocks of ``block_size``
    tokens (the remainder of each ``datasets.map`` batch of 1000 texts is dropped), as HF's ``run_clm.py`` /
    ``run_mlm.py``. The collator makes the labels: a copy of the inputs (causal; the model shifts them), or 15%
    masked tokens (masked). Labels of the data set, if any, are dropped. ``max_train_samples`` / ``max_eval_samples``
    count texts, before grouping.

    Args:
        mlm: Masked LM (BERT-style masking) instead of causal LM; must match the model's task.
        mlm_probability: Fraction of tokens selected for masking (80% [MASK], 10% random, 10% kept).
        block_size: Tokens per block; defaults to min(1024, the tokenizer's maximum length).
        line_by_line: Keep one text per example (truncated to ``max_length``, padded per batch) instead of blocks.
        **kwargs: `HFDataModule` arguments (``dataset``, ``text_column``, ``batch_size``...).
    """

    def __init__(
        self, mlm: bool = False, mlm_probability: float = 0.15, block_size: int | None = None,
        line_by_line: bool = False, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0 < mlm_probability < 1:
            raise ValueError(f"data.mlm_probability={mlm_probability} must be in (0, 1).")
        if block_size is not None and block_size < 1:
            raise ValueError(f"data.block_size={block_size} must be >= 1 (or null for the tokenizer's maximum).")
        self.mlm = mlm
        self.mlm_probability = mlm_probability
        self.block_size = block_size
        self.line_by_line = line_by_line

    def resolve_block_size(self, tokenizer: Any) -> int:
        """``block_size``, or min(1024, model_max_length); capped at model_max_length with a warning (as run_clm)."""
        limit = min(tokenizer.model_max_length, 1_000_000)
        if self.block_size is None:
            return min(1024, limit)
        if self.block_size > limit:
            warnings.warn(f"data.block_size={self.block_size} is above the tokenizer's maximum length {limit}; "
                          f"using {limit}.", stacklevel=2)
            return limit
        return self.block_size

    def preprocess(self, ds: datasets.Dataset, split: str) -> datasets.Dataset:
        """Tokenises the text column, then groups the tokens into blocks (or keeps one text per line)."""
        tokenizer = _require_tokenizer(self, "text")
        text = _require_column(ds, "text_column", self.text_column or "text", split)
        if self.line_by_line:
            ds = ds.filter(lambda b: [bool(t) and not t.isspace() for t in b[text]], batched=True)  # as run_mlm
        kwargs = {"truncation": True, "max_length": self.resolve_max_length(tokenizer)} if self.line_by_line else {}
        tokenized = ds.map(lambda b: tokenizer(b[text], **kwargs), batched=True, remove_columns=ds.column_names,
                           num_proc=self.preprocessing_num_workers, desc=f"Tokenizing {split}")
        if self.line_by_line:
            return tokenized
        size = self.resolve_block_size(tokenizer)

        def group_texts(batch: dict[str, list]) -> dict[str, list]:  # run_clm.py's group_texts (labels: collator)
            joined = {k: list(chain(*batch[k])) for k in batch}
            total = len(joined["input_ids"]) // size * size
            return {k: [v[i : i + size] for i in range(0, total, size)] for k, v in joined.items()}

        return tokenized.map(group_texts, batched=True, num_proc=self.preprocessing_num_workers,
                             desc=f"Grouping {split} into blocks of {size}")

    def _validate_labels(self, ds: Any, split: str) -> None:
        return None  # labels are token ids made by the collator

    @property
    def collate_fn(self) -> Callable[..., Any]:
        """``DataCollatorForLanguageModeling`` with ``mlm`` / ``mlm_probability`` unless ``collator`` names another."""
        if self._collate is None and self.collator is None:
            tokenizer = self.resolve_tokenizer()
            if not self.mlm and tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token  # GPT-2 style tokenizers: pad with EOS, as HF's examples
            self._collate = transformers.DataCollatorForLanguageModeling(
                tokenizer, mlm=self.mlm, mlm_probability=self.mlm_probability,
                pad_to_multiple_of=self.pad_to_multiple_of, **self.collator_kwargs)
        return super().collate_fn


class Seq2SeqDataModule(_NoClasses, HFDataModule):
    """Source -> target text pairs (summarisation, translation) batched by ``DataCollatorForSeq2Seq``.

    The collator pads labels with -100 and, given the model, builds ``decoder_input_ids`` from the labels
    (``prepare_decoder_input_ids_from_labels``), as HF's ``run_summarization.py``.

    Args:
        source_column: Column of the input text (default: the packaged data set's text column, e.g. ``document``).
        target_column: Column of the target text (default: the packaged data set's label column, e.g. ``summary``).
        source_prefix: Prepended to every source (``"summarize: "`` for pretrained T5 checkpoints).
        max_source_length: Source truncation length in tokens.
        max_target_length: Target truncation length in tokens (training split).
        val_max_target_length: Target truncation length of the evaluation splits (default ``max_target_length``).
        ignore_pad_token_for_loss: With ``padding=max_length``, label pads become -100 (ignored by the loss).
        **kwargs: `HFDataModule` arguments (``dataset``, ``batch_size``, ``padding``...).
    """

    def __init__(
        self, source_column: str | None = None, target_column: str | None = None, source_prefix: str = "",
        max_source_length: int = 1024, max_target_length: int = 128, val_max_target_length: int | None = None,
        ignore_pad_token_for_loss: bool = True, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if max_source_length < 1 or max_target_length < 1 or (val_max_target_length or 1) < 1:
            raise ValueError(f"data.max_source_length={max_source_length}, max_target_length={max_target_length} "
                             f"and val_max_target_length={val_max_target_length} must be >= 1.")
        text, label = _columns(kwargs, None, None)
        self.source_column = source_column or text
        self.target_column = target_column or label
        self.source_prefix = source_prefix
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.val_max_target_length = val_max_target_length or max_target_length
        self.ignore_pad_token_for_loss = ignore_pad_token_for_loss

    def preprocess(self, ds: datasets.Dataset, split: str) -> datasets.Dataset:
        """Tokenises sources (with the prefix) and targets (``text_target``); drops pairs with an empty side."""
        tokenizer = _require_tokenizer(self, "source and target text")
        source = _require_column(ds, "source_column", self.source_column, split)
        target = self.target_column if self.target_column in ds.column_names else None
        if target is None and split != "predict":
            _require_column(ds, "target_column", self.target_column, split)
        if target is not None:
            ds = ds.filter(lambda b: [bool(s) and bool(t) for s, t in zip(b[source], b[target])], batched=True)
        padding = "max_length" if self.padding == "max_length" else False
        target_length = self.max_target_length if split == "train" else self.val_max_target_length

        def encode(batch: dict[str, list]) -> dict[str, Any]:
            out = tokenizer([self.source_prefix + s for s in batch[source]], max_length=self.max_source_length,
                            padding=padding, truncation=True)
            if target is not None:
                ids = tokenizer(text_target=batch[target], max_length=target_length, padding=padding,
                                truncation=True)["input_ids"]
                if padding and self.ignore_pad_token_for_loss:
                    ids = [[t if t != tokenizer.pad_token_id else -100 for t in row] for row in ids]
                out["labels"] = ids
            return out

        drop = [c for c in (source, target) if c is not None]
        return ds.map(encode, batched=True, remove_columns=drop, num_proc=self.preprocessing_num_workers,
                      desc=f"Tokenizing {split}")

    def _validate_labels(self, ds: Any, split: str) -> None:
        return None  # labels are target token ids, not classes

    @property
    def collate_fn(self) -> Callable[..., Any]:
        """``DataCollatorForSeq2Seq`` with the attached model (for ``decoder_input_ids``) unless ``collator`` is set."""
        if self._collate is None and self.collator is None:
            tokenizer = self.resolve_tokenizer()
            module = self.attached_module()
            self._collate = transformers.DataCollatorForSeq2Seq(
                tokenizer, model=getattr(module, "model", None), pad_to_multiple_of=self.pad_to_multiple_of,
                label_pad_token_id=-100 if self.ignore_pad_token_for_loss else tokenizer.pad_token_id,
                **self.collator_kwargs)
        return super().collate_fn
