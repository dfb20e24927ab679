"""Filter parsing/validation and mask evaluation against an independent per-row reference."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csmae.labels import LABELS_19
from csmae.retrieval.filters import Filter, FilterColumns, as_filter

COUNTRIES = ["Austria", "Finland", "Portugal", "Serbia"]
SEASONS = ["Spring", "Summer", "Autumn", "Winter"]


def random_items(n: int, seed: int, *, geo: bool = True) -> pd.DataFrame:
    """An items table with every SEAMS column, nulls included."""
    rng = np.random.default_rng(seed)
    lon = rng.uniform(-10, 30, n)
    lat = rng.uniform(35, 65, n)
    size = rng.uniform(0.01, 2.0, n)
    has_geo = rng.random(n) < 0.85
    geoms = [
        shapely.box(x, y, x + s, y + s).wkb if ok else None for x, y, s, ok in zip(lon, lat, size, has_geo)
    ]
    t = pd.Timestamp("2017-06-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 365 * 24, n), unit="h")
    t = pd.Series(t).where(rng.random(n) < 0.9)
    df = pd.DataFrame(
        {
            "id": [f"p{i}" for i in range(n)],
            "sensor": rng.choice(["s1", "s2"], n),
            "split": rng.choice(["train", "val", "test"], n),
            "labels": list(rng.random((n, 19)) < 0.15),
            "live": rng.random(n) < 0.95,
            "country": pd.Series(rng.choice(COUNTRIES, n)).where(rng.random(n) < 0.9),
            "season": rng.choice(SEASONS, n),
        }
    )
    if geo:
        df["geometry"] = geoms
        df["bbox_xmin"] = np.where(has_geo, lon, np.nan)
        df["bbox_ymin"] = np.where(has_geo, lat, np.nan)
        df["bbox_xmax"] = np.where(has_geo, lon + size, np.nan)
        df["bbox_ymax"] = np.where(has_geo, lat + size, np.nan)
        df["datetime"] = t
    return df


def reference_pass(row: dict, f: Filter) -> bool:
    """Plain per-row reading of the Filter semantics (no numpy masks)."""
    if not row["live"]:
        return False
    names = row["names"]
    if f.sensor and row["sensor"] not in f.sensor:
        return False
    if f.split and row["split"] not in f.split:
        return False
    if f.labels_any and not (names & set(f.labels_any)):
        return False
    if f.labels_all and not set(f.labels_all) <= names:
        return False
    if f.labels_none and names & set(f.labels_none):
        return False
    if f.country and row["country"] not in f.country:
        return False
    if f.season and row["season"] not in f.season:
        return False
    if f.start or f.end:
        t = row["datetime"]
        if pd.isna(t):
            return False
        day = t.tz_convert("UTC").date()
        if (f.start and day < f.start) or (f.end and day > f.end):
            return False
    if f.bbox:
        g = row["shape"]
        if g is None:
            return False
        if not g.intersects(shapely.box(*f.bbox)):
            return False
    return True


@st.composite
def filters(draw) -> Filter:
    opt = lambda s: st.one_of(st.none(), s)  # noqa: E731
    names = lambda pool: st.lists(st.sampled_from(pool), min_size=1, max_size=3)  # noqa: E731
    start = draw(opt(st.dates(dt.date(2017, 5, 1), dt.date(2018, 7, 1))))
    end = draw(opt(st.dates(start or dt.date(2017, 5, 1), dt.date(2018, 7, 1))))
    bbox = None
    if draw(st.booleans()):
        w = draw(st.floats(-12, 30))
        s = draw(st.floats(33, 65))
        bbox = (w, s, w + draw(st.floats(0, 15)), min(90.0, s + draw(st.floats(0, 15))))
    return Filter(
        sensor=draw(opt(names(["s1", "s2"]))),
        split=draw(opt(names(["train", "val", "test"]))),
        labels_any=draw(opt(names(list(LABELS_19)))),
        labels_all=draw(opt(st.lists(st.sampled_from(list(LABELS_19)), min_size=1, max_size=2))),
        labels_none=draw(opt(names(list(LABELS_19)))),
        country=draw(opt(names(COUNTRIES))),
        season=draw(opt(names(SEASONS))),
        start=start,
        end=end,
        bbox=bbox,
    )


@pytest.fixture(scope="module")
def table():
    items = random_items(300, seed=3)
    records = items.to_dict("records")
    for r in records:
        r["names"] = {LABELS_19[j] for j, v in enumerate(r["labels"]) if v}
        r["shape"] = shapely.from_wkb(r["geometry"]) if r["geometry"] is not None else None
    return items, FilterColumns(items, label_names=LABELS_19), records


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=filters())
def test_mask_equals_reference(table, f):
    _, cols, records = table
    want = np.array([reference_pass(r, f) for r in records])
    np.testing.assert_array_equal(f.mask(cols), want)


def test_plain_dict_and_http_forms():
    f = Filter.from_dict(
        {
            "labels_any": "Beaches, dunes, sands",  # one name: never split on commas
            "country": ["Portugal", "Portugal", "Austria"],
            "start": "2018-06-01",
            "end": "2018-08-31T23:00:00Z",
            "bbox": "-9.5,36.9,-6.2,42.2",
        }
    )
    assert f.labels_any == ("Beaches, dunes, sands",)
    assert f.country == ("Portugal", "Austria")
    assert f.start == dt.date(2018, 6, 1) and f.end == dt.date(2018, 8, 31)
    assert f.bbox == (-9.5, 36.9, -6.2, 42.2)
    assert Filter.from_dict(f.to_dict()) == f
    assert as_filter(None).is_empty and as_filter(f) is f
    assert f.fields_used() == ["labels_any", "country", "start", "end", "bbox"]


@pytest.mark.parametrize(
    "d, msg",
    [
        ({"colour": ["red"]}, "unknown filter key.*'colour'.*labels_any"),
        ({"bbox": "1,2,3"}, "4 numbers"),
        ({"bbox": [0, 0, 200, 10]}, "outside lon"),
        ({"bbox": [10, 0, 200, 10]}, "outside lon"),
        ({"bbox": [0, 10, 5, 0]}, "min_lat"),
        ({"bbox": [0, "nan", 5, 10]}, "non-finite"),
        ({"start": "2018-13-01"}, "ISO date"),
        ({"start": "yesterday"}, "ISO date"),
        ({"start": "2018-06-02", "end": "2018-06-01"}, "after end"),
        ({"split": ["training"]}, "unknown split.*'train', 'val', 'test'"),
        ({"country": [""]}, "non-empty"),
    ],
)
def test_bad_filters_are_clear_errors(d, msg):
    with pytest.raises(ValueError, match=msg):
        Filter.from_dict(d)


def test_names_are_checked_against_the_archive(table):
    _, cols, _ = table
    with pytest.raises(ValueError, match=r"unknown label name\(s\) \['Forest'\]; valid label names: \['Agro"):
        Filter(labels_any=["Forest"]).mask(cols)
    with pytest.raises(ValueError, match=r"unknown country.*\['Spain'\].*\['Austria', 'Finland'"):
        Filter(country=["Spain"]).mask(cols)
    with pytest.raises(ValueError, match=r"unknown season.*Monsoon.*Autumn"):
        Filter(season=["Monsoon"]).mask(cols)
    with pytest.raises(ValueError, match="unknown sensor"):
        Filter(sensor=["s3"]).mask(cols)


def test_fields_the_archive_lacks():
    items = random_items(50, seed=1, geo=False).drop(columns=["country"])
    cols = FilterColumns(items, label_names=LABELS_19)
    with pytest.raises(ValueError, match="no country metadata"):
        Filter(country=["Austria"]).mask(cols)
    with pytest.raises(ValueError, match="no acquisition datetimes"):
        Filter(start="2018-01-01").mask(cols)
    with pytest.raises(ValueError, match="no footprints"):
        Filter(bbox=[0, 0, 1, 1]).mask(cols)
    assert Filter(season=["Summer"]).mask(cols).sum() == ((items.season == "Summer") & items.live).sum()


def test_bbox_edges_and_missing_footprints():
    items = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "sensor": ["s2"] * 4,
            "split": ["train"] * 4,
            "labels": [np.zeros(19, bool)] * 4,
            # a touches the box edge; b: bounds overlap, the triangle does not; c: no footprint
            "geometry": [
                shapely.box(10, 40, 11, 41).wkb,
                shapely.Polygon([(9.0, 39.0), (9.9, 39.0), (9.0, 39.9)]).wkb,
                None,
                shapely.box(9.5, 39.5, 9.6, 39.6).wkb,
            ],
        }
    )
    cols = FilterColumns(items, label_names=LABELS_19)
    m = Filter(bbox=(9.5, 39.5, 10.0, 40.0)).mask(cols)
    assert m.tolist() == [True, False, False, True]


def test_datetime_range_is_inclusive_utc_days():
    t = pd.to_datetime(
        ["2018-06-01T00:00:00Z", "2018-06-30T23:59:59Z", "2018-07-01T00:00:00Z", None], utc=True
    )
    items = pd.DataFrame(
        {
            "id": list("abcd"),
            "sensor": ["s1"] * 4,
            "split": [None] * 4,
            "labels": [np.zeros(19, bool)] * 4,
            "datetime": t,
        }
    )
    cols = FilterColumns(items, label_names=LABELS_19)
    assert Filter(start="2018-06-01", end="2018-06-30").mask(cols).tolist() == [True, True, False, False]
    assert Filter(start="2018-07-01").mask(cols).tolist() == [False, False, True, False]
