"""``--bbox`` / ``--aoi``: only the patches that intersect the area, with the whole-scene patch ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from csmae.errors import DataError


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from tests.geo.tile_fixtures import load_real_mosaic, write_aligned

    root = tmp_path_factory.mktemp("aoi")
    s2, s1 = write_aligned(root, load_real_mosaic())
    return root, [str(p) for p in s2], [str(p) for p in s1]


def test_bbox_cuts_the_intersecting_patches_with_whole_scene_ids(scene, tmp_path: Path) -> None:
    import shapely

    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.aoi import bbox_area
    from tests.geo.tile_fixtures import store_arrays

    root, s2, s1 = scene
    full = tile_scenes(tmp_path / "full", s2=s2, s1=s1)
    xa, ids = store_arrays(full.path)
    assert len(ids) == 6
    table = _footprints(full.path)
    # a box around the centre of patch (1, 2): touches only it
    target = next(i for i in ids if i.endswith("_r001_c002"))
    c = shapely.from_wkb(bytes.fromhex(table[target])).centroid
    box = bbox_area((c.x - 0.001, c.y - 0.001, c.x + 0.001, c.y + 0.001))
    part = tile_scenes(tmp_path / "part", s2=s2, s1=s1, aoi=box)
    xb, ids_b = store_arrays(part.path)
    assert ids_b == [target]
    k = ids.index(target)
    np.testing.assert_array_equal(xb["s2"][0], xa["s2"][k])
    np.testing.assert_array_equal(xb["s1"][0], xa["s1"][k])
    # a box over everything: the same store as no box; brute force: every patch intersecting it
    w, s, e, n = shapely.union_all([shapely.from_wkb(bytes.fromhex(v)) for v in table.values()]).bounds
    every = tile_scenes(tmp_path / "every", s2=s2, s1=s1, aoi=bbox_area((w - 1, s - 1, e + 1, n + 1)))
    assert store_arrays(every.path)[1] == ids
    # a box over the left column's edge: brute-force intersection with every footprint
    edge = bbox_area((w - 0.01, s - 0.01, w + 0.0005, n + 0.01))
    want = sorted(i for i, v in table.items() if shapely.from_wkb(bytes.fromhex(v)).intersects(edge))
    got = tile_scenes(tmp_path / "edge", s2=s2, s1=s1, aoi=edge)
    assert sorted(store_arrays(got.path)[1]) == want and 0 < len(want) < 6


def _footprints(store: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    t = [p for p in store.iterdir() if p.suffix == ".parquet"]
    tab = pq.read_table(t[0]).to_pydict()
    geom = tab.get("geometry")
    return {i: (g.hex() if isinstance(g, bytes) else g) for i, g in zip(tab["id"], geom)}


def test_aoi_geojson_and_bad_areas(scene, tmp_path: Path) -> None:
    from csmae.cli import main
    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.aoi import bbox_area, read_aoi

    root, s2, s1 = scene
    far = tmp_path / "far.geojson"
    ring = [[[0, 0], [1, 0], [1, 1], [0, 0]]]
    far.write_text(json.dumps({"type": "Feature", "properties": {},
                               "geometry": {"type": "Polygon", "coordinates": ring}}))
    with pytest.raises(DataError, match="intersects none of the 1 S2 scene"):
        tile_scenes(tmp_path / "x", s2=s2, s1=s1, aoi=read_aoi(far))
    assert not (tmp_path / "x").exists()
    bad = tmp_path / "pt.geojson"
    bad.write_text(json.dumps({"type": "Point", "coordinates": [1, 2]}))
    with pytest.raises(DataError, match="must be polygons, found a Point"):
        read_aoi(bad)
    crs = tmp_path / "crs.geojson"
    crs.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name"}, "features": []}))
    with pytest.raises(DataError, match="'crs' member"):
        read_aoi(crs)
    with pytest.raises(ValueError, match="west equals east"):
        bbox_area((179, 0, 179, 1))
    across = bbox_area((179, 0, -179, 1))  # W > E: across the antimeridian, two boxes (RFC 7946 5.2)
    assert across.geom_type == "MultiPolygon" and across.bounds == (-180, 0, 180, 1)
    assert across.area == pytest.approx(2.0)
    with pytest.raises(SystemExit):
        main(["tile", "--s2", *s2, "--bbox", "1", "2", "3", "--out", str(tmp_path / "y")])
