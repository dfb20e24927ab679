"""A small archive across the antimeridian: a synthetic S2 + S1 scene in UTM zone 60 (EPSG:32660)
near the Aleutians (52 N) whose 180 deg meridian runs through one column of patches.

The scene is 3 x 4 patches of 1200 m on the 1200 m place grid. Column 2 straddles the meridian
(its centre lies just east of it); columns 0 and 1 lie west of it (lon 179.95..179.98), column 3
east of it (lon -179.99..). It goes through the user's path: ``csmae tile`` (S2 band files + S1
VV/VH files) -> ``csmae embed`` (tiny model) -> ``csmae index`` (FAISS exact). The references the
tests compare with are computed here from the scene's own UTM grid, never from csmae's footprints:
each patch's UTM polygon, its centre, and the lon/lat of UTM points by pyproj.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CRS = "EPSG:32660"
ROWS, COLS = 3, 4
#: upper-left corner of the scene (multiples of 1200 m); lon 180 deg meets y = 5765400 at x ~ 705929
X0, Y0 = 703_200.0, 5_767_200.0
PATCH = 1200.0
TILE, S2_STAMP = "60UXB", "20200613T232119"
S1_NAME = "S1A_IW_GRDH_1SDV_20200614T063519_60UXB"
CROSSING_COL = 2


@dataclass
class Archive:
    root: Path
    store: Path
    emb: Path
    index: Path
    model: Path
    #: patch id -> (row, col) in the scene
    cells: dict[str, tuple[int, int]]

    def utm_polygon(self, pid: str):
        """The patch's polygon in EPSG:32660 metres (from the grid alone)."""
        import shapely

        r, c = self.cells[pid]
        x, y = X0 + c * PATCH, Y0 - r * PATCH
        return shapely.box(x, y - PATCH, x + PATCH, y)

    def utm_centre(self, pid: str) -> tuple[float, float]:
        r, c = self.cells[pid]
        return X0 + (c + 0.5) * PATCH, Y0 - (r + 0.5) * PATCH

    def ids_in_col(self, col: int) -> list[str]:
        return sorted(p for p, (_, c) in self.cells.items() if c == col)


def to_lonlat(x, y):
    """EPSG:32660 -> (lon, lat) with pyproj (lon normalised to [-180, 180], as pyproj gives it)."""
    from pyproj import Transformer

    return Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(x, y)


def utm_box(bbox, *, step: float = 1e-4):
    """A lon/lat box (W, S, E, N; W > E across the line) as a polygon in EPSG:32660 metres: its
    outline densified every ``step`` degrees, longitudes continuous (E + 360 when W > E), projected
    with pyproj (which takes longitudes past 180)."""
    import shapely
    from pyproj import Transformer

    w, s, e, n = bbox
    if w > e:
        e += 360.0
    lon = np.arange(w, e + step / 2, step)
    lat = np.arange(s, n + step / 2, step)
    ring = ([(x, s) for x in lon] + [(e, y) for y in lat] + [(x, n) for x in lon[::-1]]
            + [(w, y) for y in lat[::-1]])
    xs, ys = zip(*ring, strict=True)
    tr = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    px, py = tr.transform(xs, ys)
    return shapely.Polygon(zip(px, py, strict=True))


def write_scene(folder: Path) -> tuple[list[Path], list[Path]]:
    """S2 band COGs and S1 VV/VH COGs of the synthetic scene on its 10 m grid in EPSG:32660."""
    from affine import Affine

    from csmae.data.scenes.example import synthetic_scene, write_band_files, write_s1

    s2, s1 = synthetic_scene(ROWS, COLS, seed=18)
    transform = Affine(10.0, 0.0, X0, 0.0, -10.0, Y0)
    s2_files = write_band_files(folder / "s2", s2, crs=CRS, transform=transform, tile=TILE, stamp=S2_STAMP)
    s1_files = write_s1(folder / "s1", s1[0], s1[1], crs=CRS, transform=transform, name=S1_NAME)
    return s2_files, s1_files


def build_archive(root: Path) -> Archive:
    """Scene -> ``csmae tile`` -> ``csmae embed`` (tiny model) -> ``csmae index`` (FAISS exact)."""
    from csmae.cli import main
    from tests.retrieval.conftest import save_tiny

    s2, s1 = write_scene(root / "scene")
    store, emb, idx = root / "store", root / "emb", root / "idx"
    assert main(["tile", "--s2", *map(str, s2), "--s1", *map(str, s1), "--out", str(store)]) == 0
    model = save_tiny(root / "model")
    assert main(["embed", str(model), str(store), "--out", str(emb)]) == 0
    assert main(["index", str(emb), "--out", str(idx)]) == 0
    import pyarrow.parquet as pq

    ids = pq.read_table(store / "pairs.parquet", columns=["id"]).column("id").to_pylist()
    cells = {}
    for pid in ids:
        r, c = pid.rsplit("_r", 1)[1].split("_c")
        cells[pid] = (int(r), int(c))
    assert sorted(cells.values()) == [(r, c) for r in range(ROWS) for c in range(COLS)]
    return Archive(root=root, store=store, emb=emb, index=idx, model=model, cells=cells)
