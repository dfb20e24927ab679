"""An archive across the antimeridian, end to end through the user's commands (``csmae tile``,
``embed``, ``index``, ``search``, ``timeline``, ``export`` and the HTTP API), checked against
references computed from the scene's UTM grid with pyproj and shapely (antimeridian_fixtures.py):
no csmae geometry helper builds a reference here.

The scene: 3 x 4 patches of 1200 m in EPSG:32660 at 52 N; column 2 straddles 180 deg, columns 0-1
lie west of it, column 3 east of it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from pyproj import Transformer

from tests.geo.antimeridian_fixtures import COLS, CROSSING_COL, ROWS, to_lonlat, utm_box

TO_UTM = Transformer.from_crs("EPSG:4326", "EPSG:32660", always_xy=True)


def _utm(geom):
    """A lon/lat geometry's vertices in EPSG:32660 metres (pyproj takes both sides of the line)."""
    return shapely.transform(geom, lambda xy: np.column_stack(TO_UTM.transform(xy[:, 0], xy[:, 1])))


def _store_geometry(archive) -> dict[str, object]:
    import pyarrow.parquet as pq

    t = pq.read_table(archive.store / "pairs.parquet", columns=["id", "geometry", "place"]).to_pydict()
    return {i: (shapely.from_wkb(g), p) for i, g, p in zip(t["id"], t["geometry"], t["place"], strict=True)}


def _lonlat_of(archive, pid, fx=0.5, fy=0.5):
    """(lon, lat) of the point at fractions (fx from the west edge, fy from the south edge) of a patch."""
    r, c = archive.cells[pid]
    from tests.geo.antimeridian_fixtures import PATCH, X0, Y0

    return to_lonlat(X0 + (c + fx) * PATCH, Y0 - (r + 1 - fy) * PATCH)


def _key_from_utm(x: float, y: float) -> str:
    """The place key of a patch centre in EPSG:32660 metres (place.py's steps, on the centre point)."""
    lon, lat = to_lonlat(x, y)
    zone = int(np.floor((lon + 180.0) / 6.0)) % 60 + 1
    px, py = Transformer.from_crs("EPSG:32660", f"EPSG:{32600 + zone}", always_xy=True).transform(x, y)
    return f"{zone:02d}N-{int(np.rint(px / 10)) // 120}-{int(np.rint(py / 10)) // 120}"


def test_tiled_footprints_are_split_valid_and_keep_the_patch_area(antimeridian_archive):
    a = antimeridian_archive
    geo = _store_geometry(a)
    assert len(geo) == ROWS * COLS
    for pid, (g, _) in geo.items():
        coords = shapely.get_coordinates(g)
        assert g.is_valid and (np.abs(coords[:, 0]) <= 180).all(), pid
        parts = list(g.geoms) if g.geom_type == "MultiPolygon" else [g]
        assert all(p.exterior.is_ccw for p in parts), pid
        back = shapely.union_all([_utm(p) for p in parts])
        ref = a.utm_polygon(pid)
        if a.cells[pid][1] == CROSSING_COL:  # split at the line; the same ground, to a few cm
            assert g.geom_type == "MultiPolygon" and len(parts) == 2, pid
            assert sorted(round(p.bounds[0]) for p in parts) == [-180, 180]
            assert back.area == pytest.approx(ref.area, rel=1e-5)
            assert shapely.hausdorff_distance(back, ref) < 0.1
        else:
            assert g.geom_type == "Polygon", pid
            assert back.area == pytest.approx(ref.area, abs=1e-3)
            assert shapely.hausdorff_distance(back, ref) < 1e-4
    # the items table of the index carries the same geometry, and bounds -180..180 for split ones
    import pandas as pd

    items = pd.read_parquet(a.index / "items.parquet")
    for _, row in items.iterrows():
        assert shapely.from_wkb(row["geometry"]).equals_exact(geo[row["id"]][0], 0)
        if a.cells[row["id"]][1] == CROSSING_COL:
            assert (row["bbox_xmin"], row["bbox_xmax"]) == (-180.0, 180.0)


def test_place_keys_are_those_of_the_ground_on_either_side(antimeridian_archive):
    from csmae.retrieval import Retriever

    a = antimeridian_archive
    geo = _store_geometry(a)
    for pid, (_, key) in geo.items():
        assert key == _key_from_utm(*a.utm_centre(pid)), pid
    # the crossing column's centres lie just east of the line: zone 1 keys, one per row, distinct
    crossing = [geo[p][1] for p in a.ids_in_col(CROSSING_COL)]
    assert all(k.startswith("01N-") for k in crossing) and len(set(crossing)) == ROWS
    assert len({k for _, k in geo.values()}) == ROWS * COLS
    # a point on either side of the line inside a crossing patch is that patch's place
    r = Retriever.load(a.index)
    for pid in a.ids_in_col(CROSSING_COL):
        west_pt, east_pt = _lonlat_of(a, pid, 0.05, 0.5), _lonlat_of(a, pid, 0.95, 0.5)
        assert west_pt[0] > 179.9 and east_pt[0] < -179.9  # the two sides of the line
        for lon, lat in (west_pt, east_pt):
            tl = r.timeline(lon=lon, lat=lat)
            assert tl.place == geo[pid][1]
            assert sorted((x.id, x.sensor) for x in tl.acquisitions) == [(pid, "s1"), (pid, "s2")]


def _brute_rows(a, bbox) -> set[str]:
    """Patch ids whose UTM polygon intersects the lon/lat box (projected to UTM by pyproj)."""
    box = utm_box(bbox)
    return {pid for pid in a.cells if a.utm_polygon(pid).intersects(box)}


def _boxes(a):
    """Boxes with edges in the middle of patches (no patch edge within ~500 m of a box edge)."""
    col_ids = {c: a.ids_in_col(c)[1] for c in range(COLS)}  # row 1 of each column
    mid = {c: _lonlat_of(a, col_ids[c]) for c in range(COLS)}
    lat_lo = _lonlat_of(a, col_ids[0], 0.5, 0.5)[1]
    lat_hi = _lonlat_of(a, a.ids_in_col(0)[0], 0.5, 0.5)[1]  # row 0 centre
    lat_bot = _lonlat_of(a, a.ids_in_col(0)[2], 0.5, 0.5)[1]  # row 2 centre
    return {
        # across the line (W > E): from the middle of column 1 to the middle of column 3
        "across": (mid[1][0], lat_lo, mid[3][0], lat_hi),
        # across the line, rows 1-2 only, from column 0's middle
        "across-low": (mid[0][0], lat_bot, mid[3][0], lat_lo),
        # east of the line only: the crossing column's east part and column 3
        "east": (-179.9999, lat_bot, mid[3][0], lat_hi),
        # west of the line only: columns 0-1 and the crossing column's west part
        "west": (mid[0][0], lat_bot, 179.9999, lat_hi),
        # far away at the same latitudes: nothing (a world-spanning footprint would be found here)
        "elsewhere": (10.0, lat_bot, 11.0, lat_hi),
    }


def test_bbox_filters_across_the_line_equal_brute_force_on_faiss(antimeridian_archive, capsys):
    from csmae.cli import main
    from csmae.retrieval import Retriever
    from csmae.retrieval.embeddings import load_embeddings

    a = antimeridian_archive
    r = Retriever.load(a.index)
    e = load_embeddings(a.emb)
    v = e.vectors / np.linalg.norm(e.vectors, axis=1, keepdims=True)
    query = a.ids_in_col(0)[0]
    qrow = int(np.flatnonzero((e.ids == query) & (e.sensors == "s2"))[0])
    for name, bbox in _boxes(a).items():
        want = _brute_rows(a, bbox)
        assert bool(want) == (name != "elsewhere"), name
        rows = np.flatnonzero(np.isin(e.ids, sorted(want)) & (np.arange(len(e.ids)) != qrow))
        order = rows[np.lexsort((rows, -(v[rows] @ v[qrow])))]
        ref = [(str(e.ids[i]), str(e.sensors[i])) for i in order]
        hits = r.search_by_id(query, sensor="s2", k=2 * ROWS * COLS, where={"bbox": list(bbox)})
        assert [(h.id, h.sensor) for h in hits] == ref, name
        # the CLI's --bbox takes W > E as it is
        capsys.readouterr()
        assert main(["search", str(a.index), "--id", query, "--sensor", "s2", "--k", str(2 * ROWS * COLS),
                     "--json", "--bbox", *map(str, bbox)]) == 0
        got = json.loads(capsys.readouterr().out)["hits"]
        assert [(h["id"], h["sensor"]) for h in got] == ref, name


def test_http_bbox_and_search_by_point_on_both_sides(antimeridian_archive):
    from fastapi.testclient import TestClient

    from csmae.retrieval import Retriever
    from csmae.service import create_app

    a = antimeridian_archive
    boxes = _boxes(a)
    with TestClient(create_app(Retriever.load(a.index))) as client:
        query = a.ids_in_col(3)[0]
        bbox = ",".join(repr(x) for x in boxes["across"])
        got = client.get("/api/search", params={"id": query, "sensor": "s1", "k": 24, "bbox": bbox})
        assert got.status_code == 200, got.text
        ids = {h["id"] for h in got.json()["results"]}
        assert ids == _brute_rows(a, boxes["across"])
        health = client.get("/api/health").json()
        w, s, e, n = health["geo"]["extent"]  # the archive's extent crosses the line: W > E
        col0, col3 = a.ids_in_col(0), a.ids_in_col(3)
        assert 179.95 < w < 179.97 and -179.98 < e < -179.96 and w > e
        assert s < _lonlat_of(a, col0[-1], 0, 0)[1] + 1e-9 and n > _lonlat_of(a, col3[0], 1, 1)[1] - 1e-3
        for pid in a.ids_in_col(CROSSING_COL):
            for fx in (0.05, 0.95):  # west and east of the line, inside the crossing patch
                lon, lat = _lonlat_of(a, pid, fx, 0.5)
                res = client.get("/api/search", params={"lon": lon, "lat": lat, "sensor": "s2", "k": 3})
                assert res.status_code == 200, res.text
                assert res.json()["query"]["id"] == pid
                tl = client.get("/api/timeline", params={"lon": lon, "lat": lat})
                assert tl.status_code == 200 and {x["id"] for x in tl.json()["acquisitions"]} == {pid}


def test_search_by_point_and_geojson_round_trip(antimeridian_archive, tmp_path, capsys):
    from csmae.cli import main

    a = antimeridian_archive
    geo = _store_geometry(a)
    pid = a.ids_in_col(CROSSING_COL)[1]
    for fx, name in ((0.1, "west"), (0.9, "east")):
        lon, lat = _lonlat_of(a, pid, fx, 0.5)
        out = tmp_path / f"{name}.geojson"
        assert main(["search", str(a.index), f"--at={lon!r},{lat!r}", "--sensor", "s2", "--k", "23",
                     "--geojson", str(out)]) == 0
        fc = json.loads(out.read_text())
        query = fc["features"][0]
        assert query["properties"]["role"] == "query" and query["properties"]["id"] == pid
        for f in fc["features"]:
            g = shapely.geometry.shape(f["geometry"])
            stored = geo[f["properties"]["id"]][0]
            assert g.is_valid and g.equals_exact(stored, 1e-7), f["properties"]["id"]
            if f["properties"]["role"] == "hit":
                assert f["properties"]["place"] == geo[f["properties"]["id"]][1]
            if a.cells[f["properties"]["id"]][1] == CROSSING_COL:
                assert f["geometry"]["type"] == "MultiPolygon"
                w, s, e, n = f["bbox"]  # RFC 7946 5.2: W > E for a feature across the line
                assert 179.98 < w < 180 and -180 < e < -179.98 and s < n
                ref = _utm(shapely.box(w, s, e + 360, n))  # the box holds the whole patch
                assert ref.buffer(0.5).covers(a.utm_polygon(f["properties"]["id"]))
            else:
                assert f["geometry"]["type"] == "Polygon" and "bbox" not in f
    # the timeline's GeoJSON at a point east of the line
    lon, lat = _lonlat_of(a, pid, 0.9, 0.5)
    out = tmp_path / "timeline.geojson"
    assert main(["timeline", str(a.index), f"--at={lon!r},{lat!r}", "--geojson", str(out)]) == 0
    feats = json.loads(out.read_text())["features"]
    assert {f["properties"]["id"] for f in feats} == {pid} and all(f["bbox"][0] > f["bbox"][2] for f in feats)


def test_export_and_geopandas_bbox_reads_on_both_sides(antimeridian_archive, tmp_path):
    import geopandas as gpd

    from csmae.cli import main

    a = antimeridian_archive
    boxes = _boxes(a)
    out = tmp_path / "across.parquet"
    assert main(["export", str(a.index), "--bbox", *map(str, boxes["across"]), "--out", str(out)]) == 0
    df = gpd.read_parquet(out)
    assert set(df["id"]) == _brute_rows(a, boxes["across"]) and str(df.crs) in ("OGC:CRS84", "EPSG:4326")
    assert set(df.geom_type) == {"Polygon", "MultiPolygon"} and df.is_valid.all()
    # geopandas' bbox reads use the covering column: a split footprint's covering is lon -180..180,
    # so it is found from either side of the line (then intersect for the exact answer)
    for name in ("east", "west"):
        bbox = boxes[name]
        got = gpd.read_parquet(out, bbox=bbox)
        exact = {i for i, g in zip(got["id"], got.geometry, strict=True)
                 if g.intersects(shapely.box(*bbox))}
        want = _brute_rows(a, bbox) & set(df["id"])
        assert want <= set(got["id"]) and exact == want, name
        assert set(a.ids_in_col(CROSSING_COL)) & set(df["id"]) <= set(got["id"])
    # the embeddings' GeoParquet shards too
    shards = sorted(a.emb.glob("**/*.parquet"))
    emb = [gpd.read_parquet(p, bbox=boxes["east"]) for p in shards if b"geo" in _meta(p)]
    assert emb and set().union(*(set(d["id"]) for d in emb)) >= _brute_rows(a, boxes["east"])


def _meta(path) -> dict:
    import pyarrow.parquet as pq

    return pq.read_schema(path).metadata or {}


def test_tile_bbox_across_the_line_cuts_the_intersecting_patches(antimeridian_archive, tmp_path):
    import pyarrow.parquet as pq

    from csmae.cli import main

    a = antimeridian_archive
    scene = a.root / "scene"
    bbox = _boxes(a)["across-low"]
    s2 = sorted(map(str, (scene / "s2").iterdir()))
    s1 = sorted(map(str, (scene / "s1").iterdir()))
    assert main(["tile", "--s2", *s2, "--s1", *s1, "--out", str(tmp_path / "part"),
                 "--bbox", *map(str, bbox)]) == 0
    ids = set(pq.read_table(tmp_path / "part" / "pairs.parquet", columns=["id"]).column("id").to_pylist())
    assert ids == _brute_rows(a, bbox) and 0 < len(ids) < ROWS * COLS


def test_changes_with_a_bbox_across_the_line_write_split_cells(antimeridian_archive, tmp_path):
    import geopandas as gpd

    from csmae.cli import main

    a = antimeridian_archive
    geo = _store_geometry(a)
    bbox = _boxes(a)["across"]
    out, gj = tmp_path / "changes.parquet", tmp_path / "changes.geojson"
    periods = ["--before", "2020-06-13/2020-06-14", "--after", "2020-06-14/2020-06-15", "--pairing", "s2->s1"]
    assert main(["changes", str(a.index), *periods, "--bbox", *map(str, bbox), "--out", str(out),
                 "--geojson", str(gj)]) == 0
    want = {geo[p][1] for p in _brute_rows(a, bbox)}
    df = gpd.read_parquet(out)
    assert set(df["place"]) == want and df.is_valid.all()
    fc = json.loads(gj.read_text())
    for f in fc["features"]:
        cell = shapely.geometry.shape(f["geometry"])
        # the place's 1200 m cell in its zone's metres, from the key alone (pyproj)
        zone, col, row = f["properties"]["place"][:2], *map(int, f["properties"]["place"].split("-")[1:])
        tr = Transformer.from_crs("EPSG:4326", f"EPSG:326{zone}", always_xy=True)
        back = shapely.union_all([shapely.transform(p, lambda xy, tr=tr: np.column_stack(tr.transform(*xy.T)))
                                  for p in getattr(cell, "geoms", [cell])])
        assert shapely.hausdorff_distance(back, shapely.box(col * 1200, row * 1200, (col + 1) * 1200,
                                                            (row + 1) * 1200)) < 0.1
        assert (f["geometry"]["type"] == "MultiPolygon") == ("bbox" in f)
        if "bbox" in f:
            assert f["bbox"][0] > f["bbox"][2]
    assert any("bbox" in f for f in fc["features"])  # some place cells cross the line
