"""What the labels of a data set say about the model: number of labels, names, problem type, and the multi-hot
encoding of multi-label columns. A mixin of `HFDataModule`, which provides ``raw_splits`` and ``label_column``.

- one string per example (``pos`` / ``neg``): class names, in sorted order (transformers' text-classification example);
- a ``ClassLabel`` feature: its names, in its order;
- integers: class ids; floats: a regression target (one output);
- lists (of names, of ids, or multi-hot vectors of 0 / 1 of one length): multi-label classification.
"""

from __future__ import annotations

from typing import Any

import datasets

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

    def _train_labels(self) -> tuple[Any, Any] | None:
        """(label feature, label values) of the train split, or None without a label column."""
        train = self.raw_splits().get("train")
        if not isinstance(train, datasets.Dataset) or self.label_column not in train.column_names:
            return None
        return train.features[self.label_column], train[self.label_column]

    def _string_labels(self) -> list[str] | None:
        """Sorted label names (one per example, or the names in lists of a multi-label column), as transformers'
        text-classification example orders them; None for numeric labels."""
        found = self._train_labels()
        if found is None:
            return None
        feature, values = found
        if getattr(feature, "dtype", None) in _STRING_TYPES:
            return sorted(set(values))
        inner = _list_item(feature)
        if getattr(inner, "dtype", None) in _STRING_TYPES:
            return sorted({name for row in values for name in row})
        return None

    @property
    def problem_type(self) -> str | None:
        """``multi_label_classification`` when the label column holds lists (names or ids) or multi-hot vectors;
        None otherwise (transformers infers single-label or regression); linked into the model by the CLI."""
        found = self._train_labels()
        return "multi_label_classification" if found is not None and _list_item(found[0]) is not None else None

    def _multi_hot_size(self) -> int | None:
        """The length of multi-hot label vectors (every row as long, only 0 / 1), else None (lists of ids)."""
        found = self._train_labels()
        if found is None or _list_item(found[0]) is None or getattr(_list_item(found[0]), "dtype", None) in \
                _STRING_TYPES or isinstance(_list_item(found[0]), datasets.ClassLabel):
            return None
        rows = found[1]
        lengths = {len(row) for row in rows}
        if len(lengths) == 1 and min(lengths) >= 2 and {v for row in rows for v in row} <= {0, 1}:
            return lengths.pop()
        return None

    @property
    def num_labels(self) -> int | None:
        """Number of classes (1 for float regression targets); linked into the model by the CLI."""
        declared = getattr(self, "declared_num_labels", None)
        if declared is not None:
            return declared
        if self.id2label is not None:
            return len(self.id2label)
        found = self._train_labels()
        if found is None:
            return None
        feature, values = found
        if _list_item(feature) is not None:  # multi-label: multi-hot vectors, or lists of ids
            size = self._multi_hot_size()
            ids = [v for row in values for v in row]
            return size if size is not None else (int(max(ids)) + 1 if ids else None)
        dtype = getattr(feature, "dtype", "")
        if dtype.startswith("float"):
            return 1
        if not (dtype.startswith(("int", "uint")) or dtype == "bool"):
            raise ValueError(f"data.label_column='{self.label_column}' holds {feature}: labels must be class names, "
                             "class ids (int), float scores (regression) or lists of names / ids (multi-label). "
                             "Point data.label_column at such a column.")
        return int(max(values)) + 1

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
