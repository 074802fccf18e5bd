"""HFDataModule: datasets loading, tokenisation, HF sample order and collation behind a LightningDataModule.

Its DataLoaders are built by the `DataLoaders` mixin (`hf_lightning/data/dataloaders.py`).
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from typing import Any, Literal

import datasets
import lightning as L
import pyarrow.compute as pc
import torch
from torch.utils.data import IterableDataset
from transformers import PreTrainedTokenizerBase
from transformers.trainer_utils import RemoveColumnsCollator, has_length, unwrap_peft_model
from transformers.utils import logging as hf_logging

from hf_lightning.data.builtin import DATASETS, load_builtin, load_tokenizer, split_dataset
from hf_lightning.data.dataloaders import DataLoaders
from hf_lightning.data.labels import LabelInference, arrow_column, distinct
from hf_lightning.groups import DATA
from hf_lightning.settings import LoaderSettings

log = hf_logging.get_logger("transformers.trainer")

_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}
_STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("predict",)}


def model_signature_columns(model: Any, label_names: list[str] | None) -> list[str]:
    """HF's columns a model takes (``Trainer._set_signature_columns_if_needed``): the named parameters of its
    forward (under a peft wrapper, the wrapped model's), ``label``, ``label_ids`` and the label names (``labels``
    when there are none)."""
    model = getattr(model, "_orig_mod", model)
    signature = [*inspect.signature(unwrap_peft_model(model).forward).parameters, "label", "label_ids"]
    return signature + [n for n in (["labels"] if label_names is None else label_names) if n not in signature]

class HFDataModule(LabelInference, DataLoaders, L.LightningDataModule):
    """Loads, tokenises and batches a data set the way ``transformers.Trainer`` would.

    Args:
        dataset: A packaged data set name (``movie_reviews``, ``sms_spam``, ``wnut16``, ``aclsum``), a local file or
            folder (csv / tsv / json / jsonl / parquet / txt, read with ``datasets.load_dataset``), a hub id (where a hub
            is reachable), or (from Python) a ``datasets.Dataset`` / ``DatasetDict`` / dict of splits / torch dataset.
        data_files: Files per split for ``datasets.load_dataset`` (e.g. ``{train: a.csv, validation: b.csv}``).
        dataset_config: The configuration name of a hub data set.
        tokenizer: Tokenizer path, packaged model name or hub id; by default the model's tokenizer.
        text_column: Column holding the text (defaults to the packaged data set's, else ``text``).
        text_pair_column: Second text column for sentence-pair tasks.
        label_column: Column holding the label (renamed to ``labels``); defaults to the packaged one, else ``label``.
        num_labels: The number of labels, when the data cannot tell (a stream is not scanned); it then goes into the
            model as the data's. By default it is read from the train split.
        max_length: Truncation length (the tokenizer's maximum when unset).
        padding: ``longest`` pads each batch dynamically (default); ``max_length`` pads every example to max_length.
        pad_to_multiple_of: Pad batch lengths to a multiple of this (tensor-core friendly).
        collator: A collator name (``padding``, ``token_classification``, ``language_modeling``, ``seq2seq``,
            ``default``...) or a callable; dynamic padding by default.
        collator_kwargs: Keyword arguments of the collator.
        batch_size: Per-device training batch size (``per_device_train_batch_size``).
        eval_batch_size: Per-device evaluation batch size (defaults to ``batch_size``).
        loader: The DataLoaders' worker and batching options (`LoaderSettings`: ``num_workers``, ``pin_memory``,
            ``persistent_workers``, ``prefetch_factor``, ``multiprocessing_context``, ``in_order``, ``drop_last``); a
            dict works too.
        seed: Seed of the per-epoch sample order (``seed + epoch``), as HF's ``seed``.
        data_seed: Replaces ``seed`` for the sample order, as HF's ``data_seed``.
        sampling_strategy: ``random`` (HF default), ``sequential``, ``group_by_length`` (fewer pad tokens), or
            ``batch_rebalance`` (transformers' cost-balanced micro-batches of variable size: each optimizer step's
            samples split by padded length across ranks and accumulation steps).
        length_column_name: Precomputed lengths for ``group_by_length``, used where the column survives
            ``remove_unused_columns`` (off, or the model's forward takes it), as transformers; else the lengths of the
            model's main input are computed.
        remove_unused_columns: Drop columns the model's ``forward`` does not accept, as HF does.
        train_split: Name of the training split.
        validation_split: Name of the validation split; a list of split names (or a dict ``name: split``) evaluates
            several sets one after the other, with metrics prefixed ``eval_<name>_`` as transformers.Trainer does with a
            dict of eval data sets (``metric_for_best_model`` may name one: ``<name>_loss``).
        test_split: Name of the test split.
        predict_split: Split used by ``predict`` (default: the test split).
        validation_size: Fraction held out for validation when only a train split exists (seeded, fixed).
        test_size: Fraction held out for test when only a train split exists (seeded, fixed).
        max_train_samples: Keep only the first N training examples.
        max_eval_samples: Keep only the first N examples of each evaluation split.
        preprocessing_num_workers: Processes for ``datasets.map`` (tokenisation); its result is cached by ``datasets``,
            so a second run of the same command re-uses it.
        dataset_num_proc: The same under TRL's name (``SFTConfig.dataset_num_proc``); give one of the two.
        streaming: Read the files (or hub data set) as a stream (``datasets``' iterable data set): nothing is loaded
            or cached up front, examples are tokenised as they are read, in file order; training needs
            ``trainer.max_steps`` (transformers' rule for a data set without a length), labels must be ids or floats
            (names are not scanned), and with several processes each takes every n-th example. A resume re-reads
            the stream up to where the checkpoint stopped.
        tokenize: Tokenise text columns in `preprocess`; False when the data already holds model inputs (the HF-style
            Trainer's data sets, as transformers.Trainer never tokenises).
        **flat: The flat keywords of earlier releases (``num_workers=...``, ``drop_last=...``): moved into ``loader``
            with a ``FutureWarning`` naming the new key.
    """

    def __init__(
        self,
        dataset: Any = "movie_reviews",
        data_files: str | list[str] | dict[str, Any] | None = None,
        dataset_config: str | None = None,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        text_column: str | None = None,
        text_pair_column: str | None = None,
        label_column: str | None = None,
        num_labels: int | None = None,
        max_length: int | None = None,
        padding: Literal["longest", "max_length"] = "longest",
        pad_to_multiple_of: int | None = None,
        collator: str | Callable[..., Any] | None = None,
        collator_kwargs: dict[str, Any] | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        loader: LoaderSettings = LoaderSettings(),  # noqa: B008 (frozen, and copied per data module)
        seed: int = 42,
        data_seed: int | None = None,
        sampling_strategy: Literal["random", "sequential", "group_by_length", "batch_rebalance"] = "random",
        length_column_name: str = "length",
        remove_unused_columns: bool = True,
        train_split: str = "train",
        validation_split: str | list[str] | dict[str, str] = "validation",
        test_split: str = "test",
        predict_split: str | None = None,
        validation_size: float = 0.1,
        test_size: float = 0.1,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        preprocessing_num_workers: int | None = None,
        dataset_num_proc: int | None = None,
        streaming: bool = False,
        tokenize: bool = True,
        **flat: Any,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(f"batch_size={batch_size} / eval_batch_size={eval_batch_size} must be >= 1.")
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding='{padding}' must be 'longest' (dynamic) or 'max_length'.")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length={max_length} must be >= 1 (tokens per example), or unset for the tokenizer's "
                             "maximum.")
        if sampling_strategy not in ("random", "sequential", "group_by_length", "batch_rebalance"):
            raise ValueError(f"sampling_strategy='{sampling_strategy}': use random, sequential, group_by_length or "
                             "batch_rebalance.")
        self.loader = DATA.regroup({"loader": loader}, flat, type(self).__name__)["loader"]
        # The tokenizer is the module's by default: logging it here would clash with the module's hparams.
        DATA.save_hyperparameters(self, {"loader": self.loader}, ["tokenizer", "collator", "hooks", "kept_eval_loaders", "num_labels"]
                                  + ([] if isinstance(dataset, str) else ["dataset"]))
        self.dataset = dataset
        self.data_files = data_files
        self.dataset_config = dataset_config
        self.tokenizer = tokenizer
        builtin = DATASETS.get(dataset) if isinstance(dataset, str) else None
        self.text_column = text_column or (builtin.text_column if builtin else None)
        self.text_pair_column = text_pair_column
        self.label_column = label_column or (builtin.label_column if builtin else "label")
        self._label_explicit = label_column is not None  # the default 'label' may be absent (e.g. plain text)
        self.declared_num_labels = num_labels
        self.max_length = max_length
        self.padding = padding
        self.pad_to_multiple_of = pad_to_multiple_of
        self.collator = collator
        self.collator_kwargs = dict(collator_kwargs or {})
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.seed = seed
        self.data_seed = data_seed
        self.sampling_strategy = sampling_strategy
        self.length_column_name = length_column_name
        self.remove_unused_columns = remove_unused_columns
        #: several validation sets: name -> split (their roles are "validation/<name>"); None for one set
        self.validation_sets = _named_sets(validation_split)
        self.split_names = {"train": train_split, "test": test_split, "predict": predict_split or test_split}
        if self.validation_sets is None:
            self.split_names["validation"] = validation_split
        else:
            self.split_names.update({f"validation/{name}": split for name, split in self.validation_sets.items()})
        self.validation_size = validation_size
        self.test_size = test_size
        for name, value in (("max_train_samples", max_train_samples), ("max_eval_samples", max_eval_samples)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"data.{name}={value!r}: give a number of examples >= 1, or None to keep them all.")
        self.max_train_samples = max_train_samples
        self.max_eval_samples = max_eval_samples
        if dataset_num_proc is not None and preprocessing_num_workers not in (None, dataset_num_proc):
            raise ValueError(f"data.dataset_num_proc={dataset_num_proc} and data.preprocessing_num_workers="
                             f"{preprocessing_num_workers} disagree: they are one setting, give only one of them.")
        self.preprocessing_num_workers = preprocessing_num_workers or dataset_num_proc
        self.streaming = streaming
        self.tokenize = tokenize
        self._raw: dict[str, Any] | None = None
        self._splits: dict[str, Any] = {}
        self._collate: Callable[..., Any] | None = None

    # ----------------------------------------------------------------------------------------------- raw data
    def raw_splits(self) -> dict[str, Any]:
        """The untokenised splits by role (train / validation / test / predict), loaded once."""
        if self._raw is None:
            self._raw = self._load()
        return self._raw

    def _load(self) -> dict[str, Any]:
        source = self.dataset
        if self.data_files is not None:  # the user's files win over the default packaged data set
            loaded: Any = self._load_files(source if isinstance(source, str) and source not in DATASETS else None)
        elif isinstance(source, str) and source in DATASETS:
            loaded = load_builtin(source, self.validation_size, self.test_size)
        elif isinstance(source, str):
            loaded = self._load_files(source)
        else:
            loaded = source
        if isinstance(loaded, (datasets.Dataset, torch.utils.data.Dataset, IterableDataset)):
            loaded = {"train": loaded}
        if isinstance(loaded, datasets.DatasetDict) and set(loaded) == {"train"} and (
            self.validation_size or self.test_size
        ):
            loaded = split_dataset(loaded["train"], self.validation_size, self.test_size)
        loaded = dict(loaded)
        self.loaded_split_names = sorted(loaded)  # every split of the data, for messages naming a missing one
        return {role: loaded[name] for role, name in self.split_names.items() if name in loaded}

    def _load_files(self, source: str | None) -> datasets.DatasetDict:
        saved = source is not None and self.data_files is None and os.path.isdir(source) and any(
            os.path.exists(os.path.join(source, marker)) for marker in ("dataset_dict.json", "state.json"))
        if saved:  # a folder written by Dataset(Dict).save_to_disk
            return datasets.load_from_disk(source)
        files = self.data_files
        if files is None and source is not None and os.path.exists(source):
            files = source
        if files is None:  # a hub id (works where a hub is reachable)
            try:
                return datasets.load_dataset(source, self.dataset_config, streaming=self.streaming)
            except (ConnectionError, FileNotFoundError) as err:
                raise ValueError(
                    f"dataset='{source}' is not a packaged data set ({', '.join(DATASETS)}), a data file or folder "
                    f"that exists, or a Hugging Face Hub data set that can be downloaded from here "
                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Set the data module's "
                    "`dataset` (--data.dataset in the CLI) or `data_files` to one of them.") from err
        first = files if isinstance(files, str) else next(iter(files.values())) if isinstance(files, dict) else files[0]
        first = first[0] if isinstance(first, list) else first
        ext = os.path.splitext(str(first))[1].lower()
        if ext not in _FILE_BUILDERS:
            raise ValueError(f"data_files '{first}': unknown extension '{ext}'. Supported: {sorted(_FILE_BUILDERS)}.")
        kwargs = {"delimiter": "\t"} if ext == ".tsv" else {}
        return datasets.load_dataset(_FILE_BUILDERS[ext], data_files=files, streaming=self.streaming, **kwargs)

    # ----------------------------------------------------------------------------------------------- processing
    def resolve_tokenizer(self) -> PreTrainedTokenizerBase | None:
        """The tokenizer: the one given, else the attached module's (``module.tokenizer``)."""
        if isinstance(self.tokenizer, str):
            self.tokenizer = load_tokenizer(self.tokenizer, "the data module's `tokenizer` (--data.tokenizer in the CLI)")
        if self.tokenizer is None and self.trainer is not None:
            self.tokenizer = getattr(self.trainer.lightning_module, "tokenizer", None)
        return self.tokenizer

    def _check_columns(self, ds: datasets.Dataset, split: str) -> None:
        wanted = {"text_column": self.text_column, "text_pair_column": self.text_pair_column}
        if split != "predict" and self._label_explicit:
            wanted["label_column"] = self.label_column
        for field_name, column in wanted.items():
            if column is not None and column not in _columns(ds):
                raise ValueError(
                    f"data.{field_name}='{column}' is not a column of the {split} split. "
                    f"Columns: {_columns(ds)}. Set --data.{field_name} to one of them."
                )

    def preprocess(self, ds: datasets.Dataset, split: str) -> datasets.Dataset:
        """Tokenises one split (cached by ``datasets.map``); task data modules override this.

        Text (and text pair) are tokenised with truncation; the label column becomes ``labels`` (string labels are
        mapped to ids in sorted order).
        """
        tokenizer = self.resolve_tokenizer()
        columns = _columns(ds)
        if self.text_column is None:
            self.text_column = "text" if "text" in columns else None
        if self.text_column is None and tokenizer is not None and self.collator in (None, "padding") \
                and "input_ids" not in columns:
            raise ValueError(
                f"The {split} split has no 'text' column to tokenise and no input_ids: its columns are {columns}. Set "
                "data.text_column to the column holding the text, or give data.collator a collator that builds the "
                "model's inputs from these columns.")
        if self.text_column is None or tokenizer is None:
            return ds  # already model inputs (e.g. input_ids) or a custom collator handles raw columns
        self._check_columns(ds, split)
        names = self._string_labels()
        label_ids = {name: i for i, name in enumerate(names)} if names else None
        multi_hot = self._multi_label_encoder(label_ids)
        if label_ids and split != "train" and self.label_column in columns:  # the train split made the names
            values = arrow_column(ds, self.label_column)
            unseen = sorted(set(distinct(pc.list_flatten(values) if multi_hot is not None else values)) - set(label_ids))
            if unseen:
                raise ValueError(
                    f"The {split} split has label values {unseen[:10]} that the train split does not have (its labels: "
                    f"{names[:20]}). Every label must appear in training: fix data.label_column='{self.label_column}' "
                    f"or add examples of {unseen[:3]} to the train split."
                )
        max_length = self.resolve_max_length(tokenizer)
        text, pair, label = self.text_column, self.text_pair_column, self.label_column
        # Locals only in the closure: datasets fingerprints it, and `self` (with its trainer) would change every run.
        padding = "max_length" if self.padding == "max_length" else False

        def encode(batch: dict[str, list]) -> dict[str, Any]:
            out = tokenizer(
                batch[text], batch[pair] if pair else None, truncation=True, max_length=max_length, padding=padding,
            )
            if label is not None and label in batch:
                if multi_hot is not None:  # BCE with logits takes float multi-hot targets
                    out["labels"] = [multi_hot(row) for row in batch[label]]
                else:
                    out["labels"] = [label_ids[v] for v in batch[label]] if label_ids else batch[label]
            return out

        drop = [c for c in columns if c in (text, pair, label)]
        if label is not None and label in columns:  # `labels` holds the targets now: a leftover `label`
            drop += [c for c in ("label", "label_ids") if c in columns and c != label]  # would replace them
        if isinstance(ds, datasets.IterableDataset):  # a stream: tokenised lazily, as examples are read
            return ds.map(encode, batched=True, remove_columns=drop)
        return ds.map(encode, batched=True, remove_columns=drop, num_proc=self.preprocessing_num_workers,
                      desc=f"Tokenizing {split}")

    def resolve_max_length(self, tokenizer: Any) -> int:
        """``max_length``, or the tokenizer's ``model_max_length``; capped at the latter with a warning, as
        transformers' example scripts (run_glue, run_ner) cap ``max_seq_length`` (a longer input would overflow the
        model's position embeddings)."""
        limit = min(tokenizer.model_max_length, 1_000_000)
        if self.max_length is None:
            return limit
        if self.max_length > limit:
            if not getattr(self, "_max_length_capped", False):
                warnings.warn(f"data.max_length={self.max_length} is longer than the model's maximum input length "
                              f"(its tokenizer's model_max_length={limit}): using {limit}. Set data.max_length to "
                              f"{limit} or less.", UserWarning, stacklevel=3)
                self._max_length_capped = True
            return limit
        return self.max_length

    def _validate_labels(self, ds: Any, split: str) -> None:
        module = self.attached_module()
        model = getattr(module, "model", None)
        config = getattr(model, "config", None)
        num_labels = getattr(config, "num_labels", None)
        if not isinstance(ds, datasets.Dataset) or "labels" not in ds.column_names or num_labels in (None, 1):
            return
        if not type(model).__name__.endswith("ForSequenceClassification"):
            return  # class ids bounded by num_labels: other heads' labels are not (multiple choice: the choice index)
        feature = ds.features["labels"]  # only one integer class id per example is checked (not token labels)
        if config.problem_type == "multi_label_classification" or not isinstance(feature, datasets.Value) \
                or not feature.dtype.startswith("int"):
            return
        values = ds.unique("labels")
        bad = sorted(v for v in values if v != -100 and not 0 <= v < num_labels)
        if bad:
            raise ValueError(
                f"The {split} split has label values {bad[:10]} outside [0, {num_labels}) (the model's num_labels). "
                f"Set --model.num_labels to {max(values) + 1} or fix data.label_column='{self.label_column}'."
            )

    def attached_module(self) -> Any:
        """The LightningModule this data feeds (the trainer's), or None before one is attached."""
        return self.trainer.lightning_module if self.trainer is not None else None

    def signature_columns(self) -> tuple[list[str], str] | None:
        """The columns the attached model takes and its class name, or None when nothing is removed (the flag off,
        or no model attached yet).

        HF's rule (``Trainer._set_signature_columns_if_needed``): the named parameters of the model's forward (the
        model under a peft wrapper, whose forward takes ``*args, **kwargs``, or under torch.compile), ``label``,
        ``label_ids`` and the module's ``label_names`` (``labels`` for a module that has none). With no label names
        (a forward without label arguments, ``label_names=[]``), a ``labels`` column goes, as in transformers.
        """
        module = self.attached_module()
        model = getattr(module, "model", None)
        if not self.remove_unused_columns or model is None:
            return None
        model = getattr(model, "_orig_mod", model)
        return model_signature_columns(model, getattr(module, "label_names", None)), type(model).__name__

    def _remove_unused(self, ds: Any, role: str = "train") -> Any:
        columns = self.signature_columns()
        if columns is None or not isinstance(ds, (datasets.Dataset, datasets.IterableDataset)) or not _columns(ds):
            return ds
        signature, name = columns
        # As transformers, a length column goes too (unless the forward takes it): length grouping then measures the
        # model's main input, and the collator and model never see the column.
        ignored = [c for c in _columns(ds) if c not in signature]
        if ignored:  # transformers' message (Trainer._remove_unused_columns)
            self._note_ignored_columns(role, (
                f"The following columns in the {description_of(role)} set don't have a corresponding argument in "
                f"`{name}.forward` and have been ignored: {', '.join(ignored)}. If {', '.join(ignored)} are not "
                f"expected by `{name}.forward`,  you can safely ignore this message."))
        if len(ignored) == len(_columns(ds)):
            raise ValueError(
                f"No columns in the dataset match the model's forward method signature: ({', '.join(signature)}). "
                f"The following columns have been ignored: [{', '.join(ignored)}]. Please check the dataset and model. "
                "You may need to set `remove_unused_columns=False` in `TrainingArguments` (data.remove_unused_columns "
                "in yaml).")
        return ds.remove_columns(ignored)

    def _note_ignored_columns(self, role: str, message: str) -> None:
        """transformers' note of the columns a split loses, logged when the split is prepared."""
        log.info(message)

    def role_collate_fn(self, role: str) -> Callable[..., Any]:
        """The collator of one role's loader. A data set that is not a ``datasets`` one (a torch ``Dataset`` of
        dicts, a generator stream) has no columns to remove up front: as transformers
        (``Trainer._get_collator_with_removed_columns``), its features lose the keys the model does not take before
        the collator sees them, with transformers' own ``RemoveColumnsCollator`` (which logs the ignored keys once)."""
        collate = self.collate_fn
        columns = self.signature_columns()
        if columns is None or isinstance(self.split(role), (datasets.Dataset, datasets.IterableDataset)):
            return collate  # `datasets` data sets lost their unused columns in `setup` (`_remove_unused`)
        signature, name = columns
        return RemoveColumnsCollator(collate, signature, logger=log, model_name=name,
                                     description=description_of(role))

    def validation_roles(self) -> list[str]:
        """The roles of the validation sets: ``["validation"]``, or ``validation/<name>`` per named set."""
        return ["validation"] if self.validation_sets is None else [f"validation/{n}" for n in self.validation_sets]

    def setup(self, stage: str | None = None) -> None:
        roles = _STAGE_SPLITS.get(stage or "fit", ("train", "validation", "test", "predict"))
        if "validation" in roles:
            roles = [r for role in roles for r in (self.validation_roles() if role == "validation" else [role])]
        raw = self.raw_splits()
        for role in roles:
            if role in self._splits or role not in raw:
                continue
            ds = raw[role]
            limit = self.max_train_samples if role == "train" else self.max_eval_samples
            if limit is not None and isinstance(ds, datasets.Dataset):
                ds = ds.select(range(min(limit, len(ds))))
            elif limit is not None and isinstance(ds, datasets.IterableDataset):
                ds = ds.take(limit)
            if role == "train" and has_length(ds) and len(ds) == 0:
                raise ValueError(f"The training data is empty (the {self.split_names['train']!r} split has 0 examples): "
                                 "nothing to train on. Give a train split (train_dataset) with examples.")
            if isinstance(ds, (datasets.Dataset, datasets.IterableDataset)):
                if self.tokenize:
                    ds = self.preprocess(ds, role)
                self._validate_labels(ds, role)
                ds = self._remove_unused(ds, role)
            self._splits[role] = ds

    def split(self, role: str) -> Any:
        """A processed split (``train``, ``validation``, ``test``, ``predict``); clear error when absent."""
        if role not in self._splits:
            self.setup("fit" if role == "train" else "validate" if role.startswith("validation") else role)
        if role not in self._splits:
            raise ValueError(
                f"No {role} split: the data set has {sorted(self.raw_splits())}. Set data.{role}_split "
                f"or validation_size / test_size."
            )
        return self._splits[role]


def _columns(ds: Any) -> list[str]:
    """A data set's columns; a stream whose features are not declared shows them in its first example."""
    names = getattr(ds, "column_names", None)
    if names is None and isinstance(ds, datasets.IterableDataset):
        names = list(next(iter(ds)).keys())
    return list(names or [])


def description_of(role: str) -> str:
    """transformers' name of a role's data set in its "The following columns in the ... set" message."""
    return {"train": "Training", "predict": "test"}.get(role, "Evaluation")


def _named_sets(validation_split: str | list[str] | dict[str, str]) -> dict[str, str] | None:
    """``validation_split`` as ``{name: split}`` when it names several sets, else None."""
    if isinstance(validation_split, str):
        return None
    sets = dict(validation_split) if isinstance(validation_split, dict) else {s: s for s in validation_split}
    if not sets or not all(isinstance(n, str) and n and "/" not in n for n in sets):
        raise ValueError(f"data.validation_split={validation_split!r}: give a split name, a list of split names or a "
                         "dict name -> split (names without '/').")
    return sets
