"""What the labels of a data set say about the model: number of labels, names, problem type, and the multi-hot
encoding of multi-label columns. A mixin of `HFDataModule`, which provides ``raw_splits`` and ``label_column``.

- one string per example (``pos`` / ``neg``): class names, in sorted order (transformers' text-classification example);
- a ``ClassLabel`` feature: its names, in its order;
- integers: class ids; floats: a regression target (one output);
- lists (of names, of ids, or multi-hot vectors of 0 / 1 of one length): multi-label classification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc

_STRING_TYPES = ("string", "large_string")  # datasets 4+ reads csv / json text as large_string


class LabelInference:
    """Label facts of the train split, computed from the data (linked into the model by the CLI)."""

    label_column: str | None

    def raw_splits(self) -> dict[str, Any]:  # provided by HFDataModule
        raise NotImplementedError

    def _label_feature(self) -> Any:
        train = self.raw_splits().get("train")
        if isinstance(train, datasets.Dataset) and self.label_column in train.features:
            feature = train.features[self.label_column]
            return getattr(feature, "feature", feature)  # a Sequence of ClassLabel for token tags
        return None

    @property
    def id2label(self) -> dict[int, str] | None:
        """Label names by id, from a ``ClassLabel`` feature or the sorted string labels; None for numeric labels."""
        feature = self._label_feature()
        if isinstance(feature, datasets.ClassLabel):
            return dict(enumerate(feature.names))
        names = self._string_labels()
        return dict(enumerate(names)) if names else None

    def _label_facts(self) -> _LabelFacts | None:
        """What the train split's label column says, read in one pass and kept (the column is read once, however many
        of the properties below the CLI links and the splits' preprocessing ask)."""
        if "_facts" not in self.__dict__:
            train = self.raw_splits().get("train")
            found = isinstance(train, datasets.Dataset) and self.label_column in train.column_names
            self.__dict__["_facts"] = _LabelFacts.read(train.features[self.label_column],
                                                         arrow_column(train, self.label_column)) \
                if found else None
        return self.__dict__["_facts"]

    def _string_labels(self) -> list[str] | None:
        """Sorted label names (one per example, or the names in lists of a multi-label column), as transformers'
        text-classification example orders them; None for numeric labels."""
        facts = self._label_facts()
        return facts.names if facts is not None else None

    @property
    def problem_type(self) -> str | None:
        """``multi_label_classification`` when the label column holds lists (names or ids) or multi-hot vectors;
        None otherwise (transformers infers single-label or regression); linked into the model by the CLI."""
        facts = self._label_facts()
        return "multi_label_classification" if facts is not None and facts.multi_label else None

    def _multi_hot_size(self) -> int | None:
        """The length of multi-hot label vectors (every row as long, only 0 / 1), else None (lists of ids)."""
        facts = self._label_facts()
        return facts.multi_hot_size if facts is not None else None

    @property
    def num_labels(self) -> int | None:
        """Number of classes (1 for float regression targets); linked into the model by the CLI."""
        declared = getattr(self, "declared_num_labels", None)
        if declared is not None:
            return declared
        if self.id2label is not None:
            return len(self.id2label)
        facts = self._label_facts()
        if facts is None:
            return None
        if facts.multi_label:  # multi-hot vectors, or lists of ids
            return facts.multi_hot_size if facts.multi_hot_size is not None else facts.max_id + 1 \
                if facts.max_id is not None else None
        dtype = getattr(facts.feature, "dtype", "")
        if dtype.startswith("float"):
            return 1
        if not (dtype.startswith(("int", "uint")) or dtype == "bool") or facts.max_id is None:
            raise ValueError(f"data.label_column='{self.label_column}' holds {facts.feature}: labels must be class "
                             "names, class ids (int), float scores (regression) or lists of names / ids "
                             "(multi-label). Point data.label_column at such a column.")
        return facts.max_id + 1

    def _multi_label_encoder(self, label_ids: dict[str, int] | None) -> Any:
        """For a multi-label column: a function from one row (names, ids or a multi-hot vector) to its float
        multi-hot vector; None for single labels."""
        if self.problem_type != "multi_label_classification":
            return None
        size = self.num_labels
        if self._multi_hot_size() is not None:
            return lambda row: [float(v) for v in row]

        def encode(row: list[Any]) -> list[float]:
            hot = [0.0] * size
            for value in row:
                hot[label_ids[value] if label_ids else int(value)] = 1.0
            return hot

        return encode


def _list_item(feature: Any) -> Any:
    """The item feature of a list-valued feature (``Sequence`` / ``List`` / ``LargeList``), else None."""
    if isinstance(feature, (list, tuple)):
        return feature[0] if feature else None
    for name in ("Sequence", "List", "LargeList"):
        cls = getattr(datasets, name, None)
        if cls is not None and isinstance(feature, cls):
            return feature.feature
    return None


@dataclass(frozen=True)
class _LabelFacts:
    """The facts about a label column that decide the model's head and the label encoding."""

    feature: Any
    multi_label: bool
    names: list[str] | None  # sorted class names (string labels), else None
    multi_hot_size: int | None  # length of multi-hot vectors (every row as long, only 0 / 1), else None
    max_id: int | None  # the largest class id (numeric labels), else None

    @classmethod
    def read(cls, feature: Any, column: pa.ChunkedArray) -> _LabelFacts:
        """The facts of one label column, computed by Arrow over the column (no Python object per row: a million
        rows take a fraction of a second and no memory beyond the column's memory map)."""
        item = _list_item(feature)
        if item is None:  # one label per example
            if getattr(feature, "dtype", None) in _STRING_TYPES:
                return cls(feature, False, distinct(column), None, None)
            dtype = getattr(feature, "dtype", "")
            numeric = dtype.startswith(("int", "uint")) or dtype == "bool"
            return cls(feature, False, None, None, _max_id(column) if numeric else None)
        flat = pc.list_flatten(column)
        if getattr(item, "dtype", None) in _STRING_TYPES:
            return cls(feature, True, distinct(flat), None, None)
        lengths = distinct(pc.list_value_length(column))
        multi_hot = not isinstance(item, datasets.ClassLabel) and len(lengths) == 1 and lengths[0] >= 2 \
            and set(distinct(flat)) <= {0, 1}
        return cls(feature, True, None, lengths[0] if multi_hot else None, None if multi_hot else _max_id(flat))


def arrow_column(ds: datasets.Dataset, name: str) -> pa.ChunkedArray:
    """One column of a map-style data set as Arrow data (its row selection and order applied)."""
    return ds.with_format("arrow")[name]


def distinct(values: pa.ChunkedArray | pa.Array) -> list[Any]:
    """The distinct non-null values, sorted (class names in transformers' text-classification order)."""
    return sorted(pc.unique(values).drop_null().to_pylist())


def _max_id(values: pa.ChunkedArray | pa.Array) -> int | None:
    largest = pc.max(values).as_py() if len(values) else None
    return None if largest is None else int(largest)
