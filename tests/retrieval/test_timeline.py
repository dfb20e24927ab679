"""Timelines of places (Retriever.timeline, ``csmae timeline``, ``GET /api/timeline``) on an index of a
synthetic series archive (tiny random model, exact index).

Reference: loops over the embeddings folder the index was built from (its own place keys, times and
float vectors), independent of the index's row tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def _brute(emb_dir: Path, place: str, reference: str = "first", sensors=None, start=None, end=None):
    """[(id, sensor, iso time, distance)] of a place, from the embeddings folder."""
    from csmae.retrieval.embeddings import load_embeddings

    e = load_embeddings(emb_dir)
    rows = []
    for i in range(len(e)):
        t = e.meta["datetime"][i].strftime("%Y-%m-%dT%H:%M:%SZ")
        if e.meta["place"][i] != place or (sensors and e.sensors[i] not in sensors):
            continue
        if (start and t[:10] < start) or (end and t[:10] > end):
            continue
        v = e.vectors[i].astype(np.float64)
        rows.append((t, str(e.sensors[i]), str(e.ids[i]), v / np.linalg.norm(v)))
    rows.sort(key=lambda r: r[:3])
    out = []
    for j, (t, s, pid, v) in enumerate(rows):
        if reference == "previous":
            d = None if j == 0 else 1 - float(rows[j - 1][3] @ v)
        else:
            d = 1 - float(rows[0][3] @ v)
        out.append((pid, s, t, d))
    return out


def _places(emb_dir: Path) -> list[str]:
    from csmae.retrieval.embeddings import load_embeddings

    return sorted(set(load_embeddings(emb_dir).meta["place"]))


def _check(tl, want):
    got = [(a.id, a.sensor, a.datetime) for a in tl.acquisitions]
    assert got == [w[:3] for w in want]
    for a, w in zip(tl.acquisitions, want, strict=True):
        if w[3] is None:
            assert a.distance is None
        else:
            assert a.distance == pytest.approx(max(0.0, w[3]), abs=1e-5)


@pytest.mark.parametrize("reference", ["first", "previous"])
def test_timeline_of_every_place_matches_brute_force(timeline_index, reference):
    from csmae.retrieval.retriever import Retriever

    index, emb = timeline_index
    r = Retriever.load(index)
    places = _places(emb)
    assert len(places) == 6
    for p in places:
        tl = r.timeline(p, reference=reference)
        want = _brute(emb, p, reference)
        assert len(want) == 8  # 4 dates x 2 sensors
        assert tl.place == p and tl.reference == reference
        _check(tl, want)
        first = tl.acquisitions[0].distance
        assert first is None if reference == "previous" else first == pytest.approx(0, abs=1e-6)


def test_timeline_by_id_point_item_reference_and_filter(timeline_index):
    import shapely

    from csmae.retrieval.embeddings import load_embeddings
    from csmae.retrieval.retriever import Retriever

    index, emb = timeline_index
    r = Retriever.load(index)
    e = load_embeddings(emb)
    i = 5
    pid, sensor, place = str(e.ids[i]), str(e.sensors[i]), e.meta["place"][i]
    assert r.timeline(patch_id=pid, sensor=sensor).place == place
    assert r.timeline(patch_id=pid).place == place
    c = shapely.from_wkb(e.meta["geometry"][i]).centroid
    assert r.timeline(lon=c.x, lat=c.y).place == place
    # a given item as the reference (from another place): distances to it
    j = next(k for k in range(len(e)) if e.meta["place"][k] != place)
    ref = e.vectors[j].astype(np.float64) / np.linalg.norm(e.vectors[j])
    tl = r.timeline(place, reference=(str(e.ids[j]), str(e.sensors[j])))
    assert tl.reference == "item" and tl.reference_item["id"] == str(e.ids[j])
    for a in tl.acquisitions:
        k = next(k for k in range(len(e)) if str(e.ids[k]) == a.id and str(e.sensors[k]) == a.sensor)
        v = e.vectors[k].astype(np.float64) / np.linalg.norm(e.vectors[k])
        assert a.distance == pytest.approx(1 - float(ref @ v), abs=1e-5)
    # filters: one sensor, a date range
    tl = r.timeline(place, where={"sensor": ["s1"], "start": "2018-05-01", "end": "2018-09-01"})
    _check(tl, _brute(emb, place, sensors={"s1"}, start="2018-05-01", end="2018-09-01"))
    assert [a.sensor for a in tl.acquisitions] == ["s1", "s1"]


def test_timeline_bad_input_says_what_the_archive_covers(timeline_index):
    from csmae.retrieval.retriever import Retriever

    index, emb = timeline_index
    r = Retriever.load(index)
    covers = r"covers 6 places.*2018-04-0\d \.\. 2018-09"
    with pytest.raises(LookupError, match=r"no acquisition of place 01N-1-1.*" + covers):
        r.timeline("01N-1-1")
    with pytest.raises(ValueError, match="not a place key"):
        r.timeline("nowhere")
    with pytest.raises(LookupError, match="no patch of the archive contains.*covers 6 places"):
        r.timeline(lon=-120.0, lat=10.0)
    with pytest.raises(KeyError, match="no archive item 'nope'"):
        r.timeline(patch_id="nope")
    with pytest.raises(ValueError, match="exactly one"):
        r.timeline("01N-1-1", lon=1.0, lat=2.0)
    with pytest.raises(LookupError, match="none passing the filter"):
        r.timeline(_places(emb)[0], where={"start": "2020-01-01"})
    with pytest.raises(LookupError, match="reference 'nope'"):
        r.timeline(_places(emb)[0], reference="nope")


def test_timeline_cli_table_json_geojson(timeline_index, tmp_path, capsys):
    from csmae.cli import main

    index, emb = timeline_index
    place = _places(emb)[1]
    want = _brute(emb, place, "previous")
    out = tmp_path / "tl.geojson"
    assert main(["timeline", str(index), "--place", place, "--reference", "previous", "--json",
                 "--geojson", str(out)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [(a["id"], a["sensor"], a["datetime"]) for a in got["acquisitions"]] == [w[:3] for w in want]
    feats = json.loads(out.read_text())["features"]
    assert [f["properties"]["id"] for f in feats] == [w[0] for w in want]
    assert all(f["geometry"]["type"] == "Polygon" for f in feats)
    assert main(["timeline", str(index), "--place", place]) == 0
    table = capsys.readouterr().out
    assert f"place {place}: 8 acquisitions (s1, s2)" in table and want[0][0] in table
    pid = want[0][0]
    assert main(["timeline", str(index), "--id", f"{pid}@s1", "--sensor", "s2", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["place"] == place and got["sensors"] == ["s2"]
    assert main(["timeline", str(index), "--place", "01N-1-1"]) == 1
    assert "the archive covers 6 places" in capsys.readouterr().err
    assert main(["timeline", str(index), "--place", place, "--geojson", str(tmp_path / "x.csv")]) == 1
    assert not (tmp_path / "x.csv").exists()


def test_timeline_http(timeline_index):
    from fastapi.testclient import TestClient

    from csmae.retrieval.retriever import Retriever
    from csmae.service import create_app

    index, emb = timeline_index
    place = _places(emb)[2]
    want = _brute(emb, place)
    with TestClient(create_app(Retriever.load(index)), raise_server_exceptions=False) as c:
        res = c.get("/api/timeline", params={"place": place})
        assert res.status_code == 200, res.text
        body = res.json()
        assert [(a["id"], a["sensor"]) for a in body["acquisitions"]] == [w[:2] for w in want]
        for a, w in zip(body["acquisitions"], want, strict=True):
            assert a["distance"] == pytest.approx(max(0.0, w[3]), abs=1e-5)
        res = c.get("/api/timeline", params={"id": want[0][0], "sensors": "s1", "format": "geojson"})
        assert res.status_code == 200 and res.headers["content-type"].startswith("application/geo+json")
        assert {f["properties"]["sensor"] for f in res.json()["features"]} == {"s1"}
        res = c.get("/api/timeline", params={"place": place, "reference": f"{want[-1][0]}@{want[-1][1]}"})
        assert res.status_code == 200 and res.json()["reference"] == "item"
        assert res.json()["acquisitions"][-1]["distance"] == pytest.approx(0, abs=1e-6)
        assert c.get("/api/timeline", params={"place": place, "reference": "nope@s1"}).status_code == 404
        assert c.get("/api/timeline", params={"place": place, "reference": "x@s9"}).status_code == 400
        res = c.get("/api/timeline", params={"place": "01N-1-1"})
        assert res.status_code == 404 and "covers 6 places" in res.json()["detail"]
        res = c.get("/api/timeline", params={"lon": -120, "lat": 10})
        assert res.status_code == 404 and "no patch of the archive contains" in res.json()["detail"]
        res = c.get("/api/timeline", params={"place": "garbage"})
        assert res.status_code == 400 and "not a place key" in res.json()["detail"]
        assert c.get("/api/timeline", params={"id": "nope"}).status_code == 404
        assert c.get("/api/timeline").status_code == 422
        assert c.get("/api/timeline", params={"place": place, "start": "notadate"}).status_code == 422
        assert "/api/timeline" in c.get("/openapi.json").json()["paths"]


def test_timeline_signature_is_the_protocols():
    import inspect

    from csmae.retrieval.retriever import Retriever
    from csmae.service.protocol import TimelineRetriever

    def params(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert params(Retriever.timeline) == params(TimelineRetriever.timeline)
