"""Footprints of the six real v1 pairs against an independent pyproj computation from their JSONs.

The reference here projects the JSON ``coordinates`` corners with the JSON ``projection`` WKT; the
reader's CRS and transform are also checked against the GeoTIFF georeferencing (rasterio), and a copy
whose JSONs lack coordinates takes the same footprints from the GeoTIFFs. They must agree to 1e-6
degrees, through the reader, through ``csmae prepare`` (store columns) and back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

shapely = pytest.importorskip("shapely")
rasterio = pytest.importorskip("rasterio")
pyproj = pytest.importorskip("pyproj")


def _json(folder: Path) -> dict:
    return json.loads(next(folder.glob("*_labels_metadata.json")).read_text())


def _reference(doc: dict) -> np.ndarray:
    """(4, 2) lon/lat corners UL, UR, LR, LL from the JSON (S1 says lly where S2 says lry)."""
    c = doc["coordinates"]
    lower = c["lry"] if "lry" in c else c["lly"]
    t = pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(doc["projection"]), "EPSG:4326", always_xy=True)
    xs = [c["ulx"], c["lrx"], c["lrx"], c["ulx"]]
    ys = [c["uly"], c["uly"], lower, lower]
    lon, lat = t.transform(xs, ys)
    return np.column_stack([lon, lat])


def _assert_same_polygon(wkb: bytes, ref: np.ndarray) -> None:
    poly = shapely.from_wkb(wkb)
    assert poly.geom_type == "Polygon" and poly.exterior.is_ccw
    got = np.asarray(poly.exterior.coords)[:-1]
    assert got.shape == (4, 2)
    # every reference corner has a vertex within 1e-6 degrees, and vice versa
    d = np.abs(got[:, None, :] - ref[None, :, :]).max(axis=2)
    assert d.min(axis=0).max() < 1e-6 and d.min(axis=1).max() < 1e-6, d


def test_v1_pairs_footprints_match_json(v1_roots, v1_tables):
    from csmae.data import open_dataset

    s2_root, s1_root = v1_roots
    ds = open_dataset(s2_root, s1_root, v1_tables)
    assert len(ds) == 6
    for i in range(len(ds)):
        s = ds[i]
        doc = _json(s2_root / s["id"])
        _assert_same_polygon(s["geometry"], _reference(doc))
        lon, lat = _reference(doc).mean(axis=0)
        assert 35 < lat < 72 and -12 < lon < 32  # Europe
        assert s["crs"] == f"EPSG:{pyproj.CRS.from_wkt(doc['projection']).to_epsg()}"
        assert s["transform"] == (10.0, 0.0, doc["coordinates"]["ulx"], 0.0, -10.0, doc["coordinates"]["uly"])
        assert s["datetime"]["s2"] == doc["acquisition_date"].replace(" ", "T") + "Z"
        s1doc = _json(s1_root / s["s1_name"])
        assert s["datetime"]["s1"] == s1doc["acquisition_time"] + "Z"
        assert s["scene"] == {"s2": doc["tile_source"], "s1": s1doc["scene_source"]}
        with rasterio.open(s2_root / s["id"] / f"{s['id']}_B02.tif") as src:  # the GeoTIFF agrees
            assert f"EPSG:{src.crs.to_epsg()}" == s["crs"] and tuple(src.transform)[:6] == s["transform"]


def test_v1_without_json_coordinates_uses_the_geotiffs(v1_roots, tmp_path):
    """JSONs stripped of coordinates/projection: the grid comes from the GeoTIFFs, same footprints."""
    import shutil

    from csmae.data import open_dataset

    roots = []
    for root in v1_roots:
        shutil.copytree(root, tmp_path / root.name)
        roots.append(tmp_path / root.name)
        for p in roots[-1].glob("*/*_labels_metadata.json"):
            doc = json.loads(p.read_text())
            doc.pop("coordinates"), doc.pop("projection")
            p.write_text(json.dumps(doc))
    for sensors, srcs in ((("s1", "s2"), roots), (("s1",), roots[1:])):
        ds = open_dataset(*srcs, sensors=sensors)
        for i in range(len(ds)):
            s = ds[i]
            folder = v1_roots[0] / s["id"] if "s2" in sensors else v1_roots[1] / s["s1_name"]
            _assert_same_polygon(s["geometry"], _reference(_json(folder)))


def test_s1_only_footprints_from_vv_match_s1_json(v1_roots):
    """S1-only: the VV file's georeferencing, checked against the S1 JSON (key ``lly``)."""
    from csmae.data import open_dataset

    _, s1_root = v1_roots
    ds = open_dataset(s1_root, sensors=("s1",))
    for i in range(len(ds)):
        s = ds[i]
        doc = _json(s1_root / s["s1_name"])
        assert "lly" in doc["coordinates"]
        _assert_same_polygon(s["geometry"], _reference(doc))


def test_prepared_store_keeps_geo(v1_roots, v1_tables, tmp_path):
    import pyarrow.parquet as pq

    from csmae.data import open_dataset
    from csmae.data.prepare import prepare
    from csmae.data.store import read_manifest

    src = [str(v1_roots[0]), str(v1_roots[1]), str(v1_tables)]
    prepare(src, tmp_path / "store", chunk_size=4)
    table = pq.read_table(tmp_path / "store" / "pairs.parquet")
    types = {f.name: str(f.type) for f in table.schema}
    assert types["geometry"] == "binary" and types["crs"] == "string"
    assert types["transform"] == "fixed_size_list<element: double>[6]"
    assert types["datetime_s1"] == types["datetime_s2"] == "timestamp[us, tz=UTC]"
    assert types["scene_s1"] == types["scene_s2"] == "string"
    assert b"geo" in table.schema.metadata
    assert read_manifest(tmp_path / "store")["geo"] is True
    direct = open_dataset(*src)
    store = open_dataset(tmp_path / "store")
    keys = ("geometry", "crs", "transform", "datetime", "scene", "country", "season")
    for pid in direct.ids:
        a, b = direct.get(pid), store.get(pid)
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
        np.testing.assert_array_equal(a["s2"], b["s2"])


def test_lmdb_has_null_geometry_but_name_times(reben_dir):
    from csmae.data import open_dataset

    ds = open_dataset(reben_dir / "BigEarthNet-V2-LMDB", reben_dir / "metadata.parquet")
    s = ds[0]
    assert s["geometry"] is None and s["crs"] is None and s["transform"] is None
    stamp = s["id"].split("_")[2]  # S2A_MSIL2A_20170613T101031_...
    day, clock = stamp.split("T")
    want = f"{day[:4]}-{day[4:6]}-{day[6:]}T{clock[:2]}:{clock[2:4]}:{clock[4:]}Z"
    assert s["datetime"]["s2"] == want
