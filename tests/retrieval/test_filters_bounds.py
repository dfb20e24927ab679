"""Dates at the edges of the calendar (issue #21 item 7): ``end=9999-12-31`` is "no end", not a 500.

The reference is computed here with plain Python dates over the items table.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from csmae.cli import main as cli
from csmae.retrieval.filters import Filter

from .test_filters_http import client, index_dir  # noqa: F401 - fixtures

EDGES = [("0001-01-01", "9999-12-31"), ("2017-09-01", "9999-12-31"), ("0001-01-01", "2018-01-31"),
         ("9999-12-31", None), (None, "0001-01-01"), ("2262-04-12", None), (None, "1677-09-20")]


def _reference(items, start: str | None, end: str | None) -> int:
    lo = dt.date.fromisoformat(start) if start else dt.date.min
    hi = dt.date.fromisoformat(end) if end else dt.date.max
    days = [t.date() for t in items["datetime"] if t is not None and t == t]
    return sum(lo <= d <= hi for d in days)


@pytest.mark.parametrize("start, end", EDGES)
def test_mask_at_calendar_edges_equals_python_dates(client, start, end):  # noqa: F811
    _, r = client
    flt = Filter.from_dict({"start": start, "end": end})
    got = int(flt.mask(r.index.columns).sum())
    assert got == _reference(r.index.items, start, end)


@pytest.mark.parametrize("start, end", EDGES)
def test_http_year_9999_is_not_a_500(client, start, end):  # noqa: F811
    c, r = client
    params = {"id": "a001", "sensor": "s1", "k": 100}
    params.update({k: v for k, v in (("start", start), ("end", end)) if v})
    res = c.get("/api/search", params=params)
    assert res.status_code == 200, res.text
    want = r.search_by_id("a001", sensor="s1", k=100, where={"start": start, "end": end})
    assert [h["id"] for h in res.json()["results"]] == [h.id for h in want]
    page = c.get("/api/items", params={k: v for k, v in params.items() if k in ("start", "end")})
    assert page.status_code == 200 and page.json()["total"] == _reference(r.index.items, start, end)


def test_cli_end_9999(index_dir, capsys):  # noqa: F811
    assert cli(["search", str(index_dir), "--id", "a002", "--sensor", "s2", "--k", "5", "--json",
                "--end", "9999-12-31"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert len(hits) == 5
