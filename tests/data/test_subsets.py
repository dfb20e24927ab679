"""Subsets from the real v1 side tables reproduce the counts in data-formats.md."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from csmae.data.subsets import (
    PRESETS,
    SubsetFilter,
    build_subset,
    load_table,
    make_subset,
    read_names,
    resolve_filter,
)


@pytest.fixture(scope="session")
def v1_table(v1_tables) -> pd.DataFrame:
    return load_table(v1_tables)  # a few seconds: bz2 tables, read once per session


def test_table_counts(v1_table):
    assert len(v1_table) == 590_326
    assert v1_table["split"].value_counts().to_dict() == {"train": 269_695, "val": 123_723, "test": 125_866}
    assert int(v1_table["snow"].sum()) == 61_707
    assert int(v1_table["cloud"].sum()) == 9_280
    assert int(v1_table["no_label"].sum()) == 57


def test_ben14k_counts(v1_table, tmp_path):
    raw = build_subset(v1_table, SubsetFilter(countries=("Serbia",), seasons=("Summer",), exclude_snow=False,
                                               exclude_cloud=False, exclude_no_label=False))
    assert len(raw) == 14_719
    info = make_subset("tables", tmp_path / "ben14k", preset="ben-14k", table=v1_table)
    assert info["counts"] == {"train": 7_699, "val": 3_482, "test": 3_536, "all": 14_717}
    names = read_names(tmp_path / "ben14k" / "all.txt")
    assert len(names) == len(set(names)) == 14_717
    # independent check straight from the table columns
    t = v1_table
    ok = t[(t.country == "Serbia") & (t.season == "Summer") & ~t.snow & ~t.cloud & ~t.no_label]
    assert set(names) == set(ok["id"])
    assert set(read_names(tmp_path / "ben14k" / "val.txt")) == set(ok[ok.split == "val"]["id"])
    saved = json.loads((tmp_path / "ben14k" / "subset.json").read_text())
    assert saved["filter"]["countries"] == ["Serbia"] and "14,832" in saved["note"]


def test_ben270k(v1_table, tmp_path):
    info = make_subset("tables", tmp_path / "b270", preset="ben-270k", table=v1_table)
    assert info["counts"] == {"train": 269_695, "val": 123_723, "test": 125_866, "all": 519_284}


def test_max_size_reproducible(v1_table, tmp_path):
    f = resolve_filter("ben-14k", max_size=500, seed=3)
    a = build_subset(v1_table, f)
    b = build_subset(v1_table, f)
    c = build_subset(v1_table, resolve_filter("ben-14k", max_size=500, seed=4))
    assert len(a) == 500 and a["id"].tolist() == b["id"].tolist() and a["id"].tolist() != c["id"].tolist()
    assert set(a["id"]) <= set(build_subset(v1_table, PRESETS["ben-14k"])["id"])


def test_unknown_preset():
    with pytest.raises(KeyError, match="ben-14k"):
        resolve_filter("ben-15k")


def test_reben_table(reben_dir):
    t = load_table(reben_dir / "full-archive-tables" / "metadata.parquet")
    assert len(t) == 480_038 + 69_450
    assert set(t["split"].dropna()) == {"train", "val", "test"}  # "validation" normalised
    sub = build_subset(t, SubsetFilter(splits=("train",)))
    assert len(sub) == 237_871  # the usual benchmark: metadata.parquet train rows, no snow/cloud
