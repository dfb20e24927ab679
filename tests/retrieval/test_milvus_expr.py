"""Filter -> Milvus expression translation (pure; no Milvus needed)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from csmae.retrieval.backends.milvus_expr import (
    NOTHING,
    epoch_seconds,
    filter_expression,
    number,
    quote,
    rows_expression,
)
from csmae.retrieval.filters import Filter

NAMES = ["Urban fabric", "Arable land", "Forests", "Marine waters"]


def expr(**kw) -> str:
    return filter_expression(Filter(**kw), label_names=NAMES)


def legacy(**kw) -> str:
    """The form for collections with nullable fields (built before presence flags; Lite only)."""
    return filter_expression(Filter(**kw), label_names=NAMES, nullable=True)


def test_empty_filter_is_empty_expression():
    assert filter_expression(None, label_names=NAMES) == ""
    assert expr() == ""


def test_lists_become_in_with_null_guards():
    assert expr(sensor=["s1"]) == '(sensor in ["s1"])'
    assert expr(split=["train", "val"]) == '(split in ["train", "val"])'
    assert legacy(country=["Portugal"]) == '(country is not null and country in ["Portugal"])'
    assert legacy(season=["Summer", "Fall"]) == '(season is not null and season in ["Summer", "Fall"])'


def test_lists_without_nullable_fields_store_unknown_as_empty_string():
    """No ``is not null`` (a Milvus 2.3 server cannot parse it); unknown is "", never a filter value."""
    assert expr(country=["Portugal"]) == '(country in ["Portugal"])'
    assert expr(season=["Summer", "Fall"]) == '(season in ["Summer", "Fall"])'
    with pytest.raises(ValueError, match="non-empty"):
        Filter(country=[" "])


def test_labels_are_indices_into_label_names():
    # compared explicitly: a bare BOOL field is "not a boolean expression" to a Milvus 2.3 server
    assert expr(labels_any=["Forests", "Urban fabric"]) == "(label_0 == true or label_2 == true)"
    assert expr(labels_all=["Marine waters", "Arable land"]) == "(label_1 == true and label_3 == true)"
    assert expr(labels_none=["Forests", "Urban fabric"]) == "(label_0 == false and label_2 == false)"
    assert legacy(labels_none=["Forests"]) == expr(labels_none=["Forests"]) == "(label_2 == false)"
    with pytest.raises(ValueError, match=r"unknown label name.*'Glaciers'.*valid"):
        expr(labels_any=["Glaciers"])


def test_labels_as_array_functions_without_label_columns():
    def arr(**kw) -> str:
        return filter_expression(Filter(**kw), label_names=NAMES, label_columns=False)

    assert arr(labels_any=["Forests", "Urban fabric"]) == "ARRAY_CONTAINS_ANY(labels, [0, 2])"
    assert arr(labels_all=["Marine waters", "Arable land"]) == "ARRAY_CONTAINS_ALL(labels, [1, 3])"
    assert arr(labels_none=["Forests"]) == "(not ARRAY_CONTAINS_ANY(labels, [2]))"


def test_dates_are_inclusive_utc_days_in_epoch_seconds():
    e = expr(start="2018-06-01", end="2018-06-30")
    lo = int(dt.datetime(2018, 6, 1, tzinfo=dt.UTC).timestamp())
    hi = int(dt.datetime(2018, 7, 1, tzinfo=dt.UTC).timestamp())
    assert e == f"(has_t == true and t >= {lo} and t < {hi})"
    assert expr(start="2018-06-01") == f"(has_t == true and t >= {lo})"
    assert legacy(start="2018-06-01", end="2018-06-30") == f"(t is not null and t >= {lo} and t < {hi})"
    assert epoch_seconds(dt.date(1970, 1, 2)) == 86400


def test_bbox_is_footprint_bbox_intersection():
    e = legacy(bbox=(-9.5, 38.0, -8.0, 39.5))
    assert e == (
        "(bbox_xmin is not null and bbox_xmax >= -9.5 and bbox_xmin <= -8.0 "
        "and bbox_ymax >= 38.0 and bbox_ymin <= 39.5)"
    )
    assert expr(bbox=(-9.5, 38.0, -8.0, 39.5)) == e.replace("bbox_xmin is not null", "has_bbox == true")
    # numbers in positional notation, exact (shortest round-trip digits)
    tiny = expr(bbox=(5e-324, -1e-7, 1e-5, 0.1))
    assert "bbox_xmax >= 0.000" in tiny and "e-" not in tiny and "bbox_ymax >= -0.0000001 " in tiny
    assert float(number(5e-324)) == 5e-324 and number(1e-5) == "0.00001" and number(-9.5) == "-9.5"
    with pytest.raises(ValueError, match="finite"):
        number(float("nan"))


def test_fields_are_anded():
    e = expr(sensor=["s2"], labels_any=["Forests"], country=["Austria"])
    assert e.count(" and ") == 2
    assert e.startswith('(sensor in ["s2"]) and (label_2 == true)')


def test_quote_escapes():
    assert quote('Bo"s\'n ä\\x') == '"Bo\\"s\'n ä\\\\x"'


def test_rows_expression():
    assert rows_expression(np.array([3, 4, 5, 6])) == "(row >= 3 and row <= 6)"
    assert rows_expression([7, 2, 2, 5]) == "(row in [2, 5, 7])"
    assert rows_expression([]) == NOTHING
    f = filter_expression(Filter(split=["test"]), label_names=NAMES, exclude_rows=[1, 2])
    assert f == '(split in ["test"]) and (not (row >= 1 and row <= 2))'


def test_registry_names_backends_and_needs_a_uri(tmp_path):
    from csmae.retrieval.backends.registry import create_backend, load_backend

    with pytest.raises(ValueError, match=r"unknown backend 'qdrant'; backends are \['faiss', 'milvus'\]"):
        create_backend("qdrant", "exact", dim=4, n_hint=1, label_names=[])
    with pytest.raises(ValueError, match="milvus backend needs --uri"):
        create_backend("milvus", "exact", dim=4, n_hint=1, label_names=[])
    with pytest.raises(ValueError, match="--uri is for the milvus backend"):
        create_backend("faiss", "exact", dim=4, n_hint=1, label_names=[], uri="x.db")
    with pytest.raises(ValueError, match="unknown backend 'qdrant' in manifest.json"):
        load_backend(tmp_path, {"backend": "qdrant"}, params={})
