"""Place keys on the real v1 pairs and on synthetic grids, against an independent computation.

Reference: the cell is taken straight from the v1 JSON's own UTM corners (the patch centre divided
by 1200 m), with no csmae code; S1 and S2 of a pair must share a key, different patches must not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

shapely = pytest.importorskip("shapely")
pyproj = pytest.importorskip("pyproj")


def _json(folder: Path) -> dict:
    return json.loads(next(folder.glob("*_labels_metadata.json")).read_text())


def _json_polygon(doc: dict):
    c = doc["coordinates"]
    lower = c["lry"] if "lry" in c else c["lly"]
    t = pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(doc["projection"]), "EPSG:4326", always_xy=True)
    lon, lat = t.transform([c["ulx"], c["lrx"], c["lrx"], c["ulx"]], [c["uly"], c["uly"], lower, lower])
    return shapely.Polygon(zip(lon, lat, strict=True))


def _reference_key(doc: dict) -> str:
    """Cell of the patch centre on the 1200 m grid of the 6-degree UTM zone of that centre.

    For most patches that is the JSON's own zone (the centre divided by 1200 m, no reprojection);
    tiles reach into the next zone (35VPK), and then the centre is reprojected there.
    """
    c = doc["coordinates"]
    lower = c["lry"] if "lry" in c else c["lly"]
    src = pyproj.CRS.from_wkt(doc["projection"])
    cx, cy = (c["ulx"] + c["lrx"]) / 2, (c["uly"] + lower) / 2
    lon, lat = pyproj.Transformer.from_crs(src, "EPSG:4326", always_xy=True).transform(cx, cy)
    epsg = (32600 if lat >= 0 else 32700) + int((lon + 180) // 6) + 1
    if epsg != src.to_epsg():
        cx, cy = pyproj.Transformer.from_crs(src, f"EPSG:{epsg}", always_xy=True).transform(cx, cy)
    return f"{epsg % 100:02d}{'N' if epsg < 32700 else 'S'}-{int(cx // 1200)}-{int(cy // 1200)}"


def test_s1_and_s2_of_a_v1_pair_share_a_place_and_patches_differ(v1_roots, v1_tables):
    from csmae.data import open_dataset
    from csmae.geo import place_of, places_of

    s2_root, s1_root = v1_roots
    keys = {}
    for d1 in sorted(p for p in s1_root.iterdir() if p.is_dir()):
        doc1 = _json(d1)
        doc2 = _json(s2_root / doc1["corresponding_s2_patch"])
        k1, k2 = place_of(shapely.to_wkb(_json_polygon(doc1))), place_of(_json_polygon(doc2))
        assert k1 == k2 == _reference_key(doc2), d1.name
        keys[doc1["corresponding_s2_patch"]] = k2
    assert len(keys) == 6 and len(set(keys.values())) == 6  # different patches, different places
    ds = open_dataset(s2_root, s1_root, v1_tables)  # through the reader: the same keys
    assert places_of([ds.metadata(i)["geometry"] for i in range(len(ds))]) == [keys[i] for i in ds.ids]


def _grid_footprints(crs: str, x0: float, y0: float, rows: int, cols: int, size: float = 1200.0):
    from csmae.geo.footprint import footprint_wkb

    return [footprint_wkb(crs, (size / 120, 0.0, x0 + c * size, 0.0, -size / 120, y0 - r * size))
            for r in range(rows) for c in range(cols)]


def test_keys_survive_float_noise_grid_offsets_and_other_zones():
    from csmae.geo.place import place_of, place_polygon, places_of

    x0, y0 = 399960.0, 5300040.0  # an S2 tile corner (not a multiple of 1200 m)
    base = places_of(_grid_footprints("EPSG:32633", x0, y0, 3, 4))
    assert len(set(base)) == 12
    # brute force: the cell of the centre on the 1200 m grid of the same zone
    want = [f"33N-{int((x0 + c * 1200 + 600) // 1200)}-{int((y0 - r * 1200 - 600) // 1200)}"
            for r in range(3) for c in range(4)]
    assert base == want
    # a later acquisition: the same grid with float noise in the footprint (1e-9 degrees)
    rng = np.random.default_rng(0)
    noisy = [shapely.Polygon(np.asarray(shapely.from_wkb(w).exterior.coords)[:-1]
                             + rng.normal(0, 1e-9, (4, 2)))
             for w in _grid_footprints("EPSG:32633", x0, y0, 3, 4)]
    assert places_of(noisy) == base
    # grids whose patches are off the place cells by less than half a patch get the cells' keys
    on_cells = places_of(_grid_footprints("EPSG:32633", 400800.0, 5300400.0, 3, 4))
    assert places_of(_grid_footprints("EPSG:32633", 400800.0 + 590, 5300400.0 - 170, 3, 4)) == on_cells
    assert places_of(_grid_footprints("EPSG:32633", 400800.0 - 590, 5300400.0 + 590, 3, 4)) == on_cells
    assert places_of(_grid_footprints("EPSG:32633", 400800.0 + 610, 5300400.0, 1, 1))[0] != on_cells[0]
    # a centre exactly on a cell edge goes to one side, also with noise
    edge = _grid_footprints("EPSG:32633", 600.0 * 681, 1200.0 * 4450 + 600, 1, 1)[0]
    jitter = shapely.Polygon(np.asarray(shapely.from_wkb(edge).exterior.coords)[:-1] + [1e-10, -1e-10])
    assert place_of(edge) == place_of(jitter) == "33N-341-4450"  # centre (409200, 5340000): both on edges
    # the same ground expressed in the neighbouring zone's CRS gives the same key
    poly = shapely.from_wkb(_grid_footprints("EPSG:32633", x0, y0, 1, 1)[0])
    t = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    xs, ys = t.transform(*np.asarray(poly.exterior.coords).T)
    from csmae.geo.footprint import footprint

    assert footprint("EPSG:32633", (10, 0, x0, 0, -10, y0)).equals_exact(poly, 1e-9)
    assert xs.min() > 0 and ys.min() > 0
    assert place_of(poly) == base[0]
    # the cell polygon holds the patch centre; GeoJSON mappings and None work
    assert place_polygon(base[0]).contains(poly.centroid)
    assert place_of(shapely.geometry.mapping(poly)) == base[0] and place_of(None) is None


def test_southern_hemisphere_and_bad_keys():
    from csmae.geo.place import parse_place, place_of

    w = _grid_footprints("EPSG:32733", 300000.0, 7200000.0, 1, 1)[0]
    assert place_of(w) == f"33S-{300600 // 1200}-{(7200000 - 600) // 1200}"
    assert parse_place("33S-250-5999") == (32733, 250, 5999)
    for bad in ("33X-1-2", "61N-1-2", "place", ""):
        with pytest.raises(ValueError, match="not a place key"):
            parse_place(bad)
    with pytest.raises(ValueError, match="empty"):
        place_of(shapely.Polygon())


def test_artefacts_without_a_place_column_get_it_from_their_footprints(tmp_path):
    import pyarrow.parquet as pq

    from csmae.geo.place import fill_places, place_of
    from csmae.retrieval.embeddings import read_shard, write_shard

    geoms = _grid_footprints("EPSG:32633", 400800.0, 5300400.0, 1, 3) + [None]
    write_shard(tmp_path / "new.parquet", ids=["a", "b", "c", "d"], sensors=["s1"] * 4, splits=["test"] * 4,
                labels=np.zeros((4, 19), bool), vectors=np.ones((4, 3), np.float32), meta={"geometry": geoms})
    table = pq.read_table(tmp_path / "new.parquet")
    want = [place_of(g) for g in geoms]
    assert table.column("place").to_pylist() == want and want[-1] is None
    pq.write_table(table.drop(["place"]), tmp_path / "old.parquet")  # as written before the column
    got = read_shard(tmp_path / "old.parquet")["meta"]["place"]
    assert [None if v != v else v for v in got] == want  # pandas may show a missing key as NaN
    # grown tables: a missing (None/NaN) key is computed, a given one kept
    assert fill_places(["x", float("nan"), None, None], geoms) == ["x", want[1], want[2], None]
