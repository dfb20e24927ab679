"""``csmae search --at LON,LAT --geojson`` on the real v1 pairs (tiny random model, exact index).

Reference: the pair whose JSON polygon (pyproj, independent of csmae) contains the point.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

shapely = pytest.importorskip("shapely")
pyproj = pytest.importorskip("pyproj")


@pytest.fixture(scope="module")
def v1_index(v1_roots, tmp_path_factory) -> Path:
    import torch

    import csmae
    from csmae.retrieval import build_index, embed_dataset

    tmp = tmp_path_factory.mktemp("geo-idx")
    torch.manual_seed(0)
    csmae.create_model("csmae_sesd_tiny").save_pretrained(tmp / "model")
    emb = embed_dataset(tmp / "model", [str(v1_roots[0]), str(v1_roots[1])], tmp / "emb", precision="fp32",
                        device="cpu", batch_size=8)
    build_index(emb, kind="exact", out=tmp / "index")
    return tmp / "index"


def _json_polygons(s2_root: Path) -> dict[str, object]:
    out = {}
    for d in sorted(p for p in s2_root.iterdir() if p.is_dir()):
        doc = json.loads((d / f"{d.name}_labels_metadata.json").read_text())
        c = doc["coordinates"]
        t = pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(doc["projection"]), "EPSG:4326", always_xy=True)
        xs, ys = [c["ulx"], c["lrx"], c["lrx"], c["ulx"]], [c["uly"], c["uly"], c["lry"], c["lry"]]
        lon, lat = t.transform(xs, ys)
        out[d.name] = shapely.Polygon(zip(lon, lat, strict=True))
    return out


def test_search_at_point_writes_geojson(v1_index, v1_roots, tmp_path, capsys):
    import geopandas as gpd

    from csmae.cli import main

    polys = _json_polygons(v1_roots[0])
    pid = sorted(polys)[2]
    # a point inside that patch, off its centre (so the containment test is not trivial)
    c = polys[pid].centroid
    lon, lat = c.x + 0.003, c.y - 0.002
    assert [p for p, g in polys.items() if g.contains(shapely.Point(lon, lat))] == [pid]
    out = tmp_path / "hits.geojson"
    rc = main(["search", str(v1_index), f"--at={lon},{lat}", "--sensor", "s2", "--target", "s1",
               "--k", "3", "--geojson", str(out), "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["query"]["id"] == pid and printed["query"]["at"] == [lon, lat]
    fc = json.loads(out.read_text())
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 4
    q, *hits = fc["features"]
    assert q["properties"]["role"] == "query" and q["properties"]["id"] == pid
    doc = json.loads((v1_roots[0] / pid / f"{pid}_labels_metadata.json").read_text())
    assert q["properties"]["datetime"] == doc["acquisition_date"].replace(" ", "T") + "Z"
    for f, h in zip(hits, printed["hits"], strict=True):
        assert f["properties"]["id"] == h["id"] and f["properties"]["sensor"] == "s1" == h["sensor"]
        assert f["properties"]["rank"] == h["rank"] and f["properties"]["score"] == pytest.approx(h["score"])
        assert f["properties"]["labels"] == h["labels"] and f["properties"]["datetime"] == h["datetime"]
    # every footprint is its pair's JSON polygon (to 1e-6 degrees); GeoPandas reads the file
    for f in fc["features"]:
        got = np.asarray(f["geometry"]["coordinates"][0])[:-1]
        ref = np.asarray(polys[f["properties"]["id"]].exterior.coords)[:-1]
        d = np.abs(got[:, None] - ref[None]).max(axis=2)
        assert got.shape == (4, 2) and d.min(axis=0).max() < 1e-6 and d.min(axis=1).max() < 1e-6
    gdf = gpd.read_file(out)
    assert len(gdf) == 4 and list(gdf["role"]) == ["query", "hit", "hit", "hit"]


def test_search_at_point_outside_names_the_extent(v1_index, capsys):
    from csmae.cli import main

    rc = main(["search", str(v1_index), "--at", "0,0", "--sensor", "s2"])
    err = capsys.readouterr().err
    assert rc == 1 and "no s2 patch of the archive contains lon 0.000000, lat 0.000000" in err
    assert "footprints span lon" in err
    with pytest.raises(SystemExit):
        main(["search", str(v1_index), "--at", "13.7", "--sensor", "s2"])


def test_real_embeddings_shard_is_geoparquet(v1_index, v1_roots):
    """The shard written by ``embed_dataset`` from the real pairs: geopandas reads it as it is."""
    import geopandas as gpd

    emb = v1_index.parent / "emb"
    gdf = gpd.read_parquet(next(emb.glob("part-*.parquet")))
    assert len(gdf) == 12 and set(gdf["sensor"]) == {"s1", "s2"}
    assert gdf.crs.equals("OGC:CRS84") or gdf.crs.to_epsg() == 4326
    polys = _json_polygons(v1_roots[0])
    for pid, sensor, geom, when in zip(gdf["id"], gdf["sensor"], gdf.geometry, gdf["datetime"], strict=True):
        ref = np.asarray(polys[pid].exterior.coords)[:-1]
        got = np.asarray(geom.exterior.coords)[:-1]
        assert np.abs(got[:, None] - ref[None]).max(axis=2).min(axis=1).max() < 1e-6
        folder = v1_roots[0] / pid if sensor == "s2" else next(v1_roots[1].glob(f"*{pid.split('_', 3)[-1]}"))
        doc = json.loads(next(folder.glob("*_labels_metadata.json")).read_text())
        stamp = doc.get("acquisition_date") or doc["acquisition_time"]
        assert when.strftime("%Y-%m-%d %H:%M:%S") == stamp.replace("T", " ")
