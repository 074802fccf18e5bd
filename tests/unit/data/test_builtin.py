"""The packaged data sets (hf_lightning/data/builtin.py): fixed seeded splits, and a missing asset naming its install
command."""

from __future__ import annotations

import pytest

from hf_lightning.data import MissingAssetError, load_builtin
from hf_lightning.data.builtin import Asset


def test_builtin_splits_are_fixed_and_disjoint():
    first, second = load_builtin("movie_reviews"), load_builtin("movie_reviews")
    assert {k: len(v) for k, v in first.items()} == {"train": 8482, "validation": 1060, "test": 1061}
    assert first["validation"]["text"][:5] == second["validation"]["text"][:5]
    assert not set(first["test"]["text"]) & set(first["train"]["text"])
    assert set(first["train"]["label"]) == {0, 1}


def test_sms_spam_and_ner_assets_load():
    sms = load_builtin("sms_spam")
    assert sum(len(v) for v in sms.values()) == 4522  # 4,837 messages, 315 repeated texts dropped
    ner = load_builtin("wnut16")
    names = ner["train"].features["ner_tags"].feature.names
    assert names[0] == "O" and "B-person" in names


def test_missing_asset_names_the_install_command():
    with pytest.raises(MissingAssetError, match="install_assets.sh"):
        Asset("no-such-package-xyz", "1.0", "x.txt").locate()
