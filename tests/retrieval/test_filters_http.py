"""Filters through the HTTP API and the CLI (same keys, same results as the Python API), /api/reload."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import shapely

from csmae.cli import main as cli
from csmae.retrieval.index import build_index
from csmae.retrieval.retriever import Retriever

from .test_index_grow import make_emb, write_emb

IDS = [f"a{i:03d}" for i in range(150)]
ADMIN_TOKEN = "test-admin-token"


def with_meta(emb, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = len(emb)
    lon, lat = rng.uniform(-10, 20, n), rng.uniform(36, 60, n)
    emb.meta = pd.DataFrame(
        {
            "country": rng.choice(["Portugal", "Austria", "Finland"], n),
            "season": rng.choice(["Summer", "Winter"], n),
            "datetime": pd.Timestamp("2017-06-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 400, n), unit="D"),
            "geometry": [shapely.box(x, y, x + 0.5, y + 0.5).wkb for x, y in zip(lon, lat)],
        }
    )
    return emb


@pytest.fixture()
def index_dir(tmp_path):
    build_index(with_meta(make_emb(IDS)), "exact", tmp_path / "idx")
    return tmp_path / "idx"


@pytest.fixture()
def client(index_dir):
    from fastapi.testclient import TestClient

    from csmae.service import ServiceSettings, create_app

    r = Retriever.load(index_dir)
    app = create_app(r, settings=ServiceSettings(admin_token=ADMIN_TOKEN))  # reload needs the token
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    return TestClient(app, headers=headers), r


WHERE = {
    "labels_any": ["Arable land", "Pastures", "Urban fabric"],
    "labels_none": ["Coniferous forest"],
    "country": ["Portugal", "Austria"],
    "start": "2017-09-01",
    "end": "2018-05-31",
    "bbox": [-10, 36, 12, 60],
}


def test_http_filter_equals_python_api(client):
    c, r = client
    want = r.search_by_id("a001", sensor="s1", target="s2", k=8, where=WHERE)
    assert want and all(h.sensor == "s2" for h in want)
    params = [("id", "a001"), ("sensor", "s1"), ("target", "s2"), ("k", "8")]
    for key, v in WHERE.items():
        if key == "bbox":
            params.append((key, ",".join(map(str, v))))
        elif isinstance(v, list):
            params += [(key, x) for x in v]
        else:
            params.append((key, v))
    res = c.get("/api/search", params=params)
    assert res.status_code == 200, res.text
    assert [(h["id"], h["sensor"]) for h in res.json()["results"]] == [(h.id, h.sensor) for h in want]
    health = c.get("/api/health").json()["filters"]
    assert (
        health["country"] == ["Austria", "Finland", "Portugal"] and health["geometry"] and health["datetime"]
    )
    page = c.get("/api/items", params=[("country", "Finland"), ("season", "Winter"), ("limit", "500")]).json()
    items = r.index.items
    assert page["total"] == int(((items.country == "Finland") & (items.season == "Winter")).sum())


@pytest.mark.parametrize(
    "params, status, msg",
    [
        ({"country": "Spain"}, 400, "valid country names: \\['Austria', 'Finland', 'Portugal'\\]"),
        ({"labels_any": "Forest"}, 400, "unknown label"),
        ({"bbox": "1,2,3"}, 422, "4 numbers"),
        ({"start": "2018-02-30"}, 422, "ISO date"),
        ({"start": "2018-03-01", "end": "2018-02-01"}, 422, "after end"),
    ],
)
def test_http_bad_filters(client, params, status, msg):
    c, _ = client
    res = c.get("/api/search", params={"id": "a001", "sensor": "s1", **params})
    assert res.status_code == status, res.text
    import re

    assert re.search(msg, json.dumps(res.json())), res.json()


def test_reload_serves_a_grown_index(client, index_dir, tmp_path):
    c, _ = client
    before = c.get("/api/health").json()["counts"]["vectors"]
    assert (
        cli(["index", "add", str(index_dir), str(write_emb(make_emb(["new1", "new2"]), tmp_path / "e"))]) == 0
    )
    assert c.get("/api/search", params={"id": "new1", "sensor": "s1"}).status_code == 404
    res = c.post("/api/reload")
    assert res.status_code == 200 and res.json()["count"] == before + 4
    assert c.get("/api/health").json()["counts"]["vectors"] == before + 4
    hits = c.get("/api/search", params={"id": "new1", "sensor": "s1", "target": "s1", "k": 3}).json()[
        "results"
    ]
    assert len(hits) == 3
    (tmp_path / "gone.txt").write_text("new1\n")
    assert cli(["index", "remove", str(index_dir), "--ids", str(tmp_path / "gone.txt")]) == 0
    assert c.post("/api/reload").json()["count"] == before + 2


def test_cli_search_filters(index_dir, capsys):
    args = ["search", str(index_dir), "--id", "a002", "--sensor", "s2", "--k", "5", "--json",
            "--label", "Arable land", "--label", "Pastures", "--exclude-label", "Urban fabric",
            "--country", "Portugal", "--start", "2017-06-01", "--end", "2018-07-01",
            "--bbox", "-10", "36", "20", "60"]  # fmt: skip
    assert cli(args) == 0
    out = json.loads(capsys.readouterr().out)
    r = Retriever.load(index_dir)
    want = r.search_by_id("a002", sensor="s2", k=5, where=out["query"]["where"])
    assert [h["id"] for h in out["hits"]] == [h.id for h in want]
    assert out["query"]["where"]["labels_any"] == ["Arable land", "Pastures"]
    assert cli(["search", str(index_dir), "--id", "a002", "--sensor", "s2", "--country", "Spain"]) == 1
    assert "valid country names" in capsys.readouterr().err
    assert cli(["search", str(index_dir), "--id", "a002", "--sensor", "s2", "--start", "2018-13-01"]) == 1
    assert "ISO date" in capsys.readouterr().err
