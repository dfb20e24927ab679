"""S1 alone defines the patches: they are cut on the 1200 m place cells of the scene's UTM zone.

The reference is independent of the tiler: each stored footprint's lon/lat corners projected back to
the zone with pyproj must be cell corners (multiples of 1200 m); the cell they bound, its key by the
documented formula, ``place_of`` of the footprint and the stored ``place`` must agree; and where a
BigEarthNet-grid S2 patch lies on the same cell, both have the same key.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.geo.tile_fixtures import load_real_mosaic, write_aligned

CELL = 1200.0


def _cells(store: Path, epsg: int) -> list[tuple[str, str, str]]:
    """(id, stored place, key of the cell its corners bound) per patch; asserts corners on the grid."""
    import shapely
    from pyproj import Transformer

    from csmae.geo.place import place_of

    t = pq.read_table(store / "pairs.parquet").to_pandas()
    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    out = []
    for pid, wkb, stored in zip(t["id"], t["geometry"], t["place"], strict=True):
        ring = shapely.get_coordinates(shapely.from_wkb(wkb))[:4]
        x, y = (np.asarray(v) for v in to_utm.transform(ring[:, 0], ring[:, 1]))
        np.testing.assert_allclose(x / CELL, np.rint(x / CELL), atol=1e-6)  # every corner a cell corner
        np.testing.assert_allclose(y / CELL, np.rint(y / CELL), atol=1e-6)
        assert np.ptp(np.rint(x)) == CELL and np.ptp(np.rint(y)) == CELL  # one cell, not more
        hemi = "N" if epsg < 32700 else "S"
        key = f"{epsg % 100:02d}{hemi}-{int(np.rint(x.min()) // CELL)}-{int(np.rint(y.min()) // CELL)}"
        assert place_of(shapely.from_wkb(wkb)) == stored == key, pid
        out.append((pid, stored, key))
    return out


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The real BigEarthNet mosaic (on the place grid) as S2, and an S1 scene over it on another grid."""
    from affine import Affine
    from rasterio.crs import CRS

    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.example import write_s1

    root = tmp_path_factory.mktemp("s1places")
    m = load_real_mosaic()
    write_aligned(root, m)
    tile_scenes(root / "s2only", s2=[str(root / "s2")])
    # S1 on a 10 m grid of the same zone, 370 m / 130 m off the place grid, reaching 1.5 km beyond
    t = m.transform
    x0, y0 = t.c - 1500 + 370, t.f + 1500 - 130
    rng = np.random.default_rng(0)
    h, w = 240 + 300, 360 + 300
    vv = rng.uniform(-18, -6, size=(h, w)).astype(np.float32)
    write_s1(root / "s1off", vv, vv - 6, crs=CRS.from_epsg(32633), transform=Affine(10, 0, x0, 0, -10, y0),
             name="S1A_IW_GRDH_1SDV_20170613T165043_off")
    tile_scenes(root / "s1only", s1=[str(root / "s1off")])
    return root, m


def test_s1_only_patches_are_place_cells(real):
    root, m = real
    cells = _cells(root / "s1only", 32633)
    man = json.loads((root / "s1only" / "manifest.json").read_text())
    grid = man["tiling"]["scenes"][0]["grid"]
    a, _, x0, _, e, y0 = grid["transform"]
    assert grid["crs"] == "EPSG:32633" and (a, e) == (10.0, -10.0)
    assert x0 % CELL == 0 and y0 % CELL == 0
    # ids: patch (r, c) of the grid is the documented cell (x0 // 1200 + c, y0 // 1200 - 1 - r)
    for pid, place, _ in cells:
        r, c = (int(s[1:]) for s in pid.split("_")[-2:])
        assert place == f"33N-{int(x0 // CELL) + c}-{int(y0 // CELL) - 1 - r}"
    assert len(cells) >= 6 and len({p for _, p, _ in cells}) == len(cells)  # every patch its own place


def test_s1_only_keys_are_those_of_the_bigearthnet_patches_on_the_same_cells(real):
    root, m = real
    s2 = pq.read_table(root / "s2only" / "pairs.parquet").to_pandas()
    s1 = pq.read_table(root / "s1only" / "pairs.parquet").to_pandas()
    on_grid = _cells(root / "s2only", 32633)  # the real patches sit on the place grid themselves
    assert len(on_grid) == 6
    import shapely

    s1_geom = {p: shapely.from_wkb(g) for p, g in zip(s1["place"], s1["geometry"], strict=True)}
    for place, g in zip(s2["place"], s2["geometry"], strict=True):
        assert place in s1_geom  # the S1-only store has a patch on every BigEarthNet cell ...
        # ... with the same footprint (to float noise), so the same key: S1 and S2 of one place meet
        assert s1_geom[place].equals_exact(shapely.from_wkb(g), tolerance=1e-9)


def test_raw_grd_alone_is_cut_on_the_place_cells(tmp_path):
    """A raw GRD (lon/lat footprint, no grid of its own): the cells of its centre's zone."""
    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.aoi import bbox_area
    from csmae.geo.place import utm_epsg
    from tests.scenes.grd_fixtures import make_product

    fx = make_product(tmp_path / "grd")
    from csmae.data.scenes.grd_scene import open_grd_scene

    fp = open_grd_scene(str(fx.safe)).footprint()
    epsg = utm_epsg(*np.asarray(fp.envelope.centroid.coords[0]))
    # a small box inside the fixture's data region (between GCP lines 2002 and 4004, pixels 0 and 2616)
    res = tile_scenes(tmp_path / "store", s1=[str(fx.safe)], aoi=bbox_area((1.98, 44.80, 2.06, 44.86)),
                      min_valid=0.5)
    assert res.patches >= 4
    cells = _cells(tmp_path / "store", epsg)
    assert len({p for _, p, _ in cells}) == len(cells)
