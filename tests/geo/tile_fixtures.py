"""Small georeferenced scenes for the ``csmae tile`` tests, built from the real v1 patch pixels.

The six real BigEarthNet v1 pairs (../shared/data, CDLA-Permissive-1.0, Copernicus Sentinel data)
are placed as a 2 x 3 mosaic on the UTM grid of the first patch (its real origin), so patch (0, 0)
keeps its real footprint. Helpers only: the tests live in test_tile*.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED_DATA

V1 = SHARED_DATA / "bigearthnet-v1"
ROWS, COLS = 2, 3
#: names of the example scene (the grid is that of the first real patch, from tile 33UUP)
TILE, S2_STAMP = "33UUP", "20170613T101031"
S2_SCENE = f"T{TILE}_{S2_STAMP}"
S1_NAME = "S1A_IW_GRDH_1SDV_20170613T165043_33UUP"


@dataclass
class RealMosaic:
    names: list[str]  # S2 patch names, row by row
    s1_names: list[str]
    s2: dict[str, np.ndarray]  # native bands of the mosaic (uint16)
    s1: np.ndarray  # (2, 240, 360) dB (VV, VH)
    crs: object
    transform: object  # 10 m grid, origin = the first patch's upper left corner


def load_real_mosaic() -> RealMosaic:
    import rasterio

    from csmae.data.scenes.example import mosaic
    from csmae.sensors import get_sensor

    s2_root, s1_root = V1 / "BigEarthNet-v1.0", V1 / "BigEarthNet-S1-v1.0"
    if not s2_root.exists():
        pytest.skip(f"shared sample data not found at {s2_root}")
    names = sorted(p.name for p in s2_root.iterdir())
    s1_all = sorted(p.name for p in s1_root.iterdir())
    # v1 pairs share the patch's row/col suffix: S2A_..._36_85 <-> S1A_..._29UPU_36_85
    s1_names = [next(s for s in s1_all if s.endswith("_" + "_".join(n.split("_")[-2:]))) for n in names]
    s2p, s1p = [], []
    crs = transform = None
    for n, m in zip(names, s1_names):
        bands = {}
        for b in get_sensor("s2").bands:
            with rasterio.open(s2_root / n / f"{n}_{b}.tif") as src:
                bands[b] = src.read(1)
                if b == "B02" and crs is None:
                    crs, transform = src.crs, src.transform
        s2p.append(bands)
        pol = {}
        for p in ("VV", "VH"):
            with rasterio.open(s1_root / m / f"{m}_{p}.tif") as src:
                pol[p] = src.read(1)
        s1p.append(pol)
    s1m = mosaic(s1p, COLS)
    return RealMosaic(names=names, s1_names=s1_names, s2=mosaic(s2p, COLS),
                      s1=np.stack([s1m["VV"], s1m["VH"]]), crs=crs, transform=transform)


def write_aligned(root: Path, m: RealMosaic, *, s1_units: str = "db") -> tuple[list[Path], list[Path]]:
    """S2 per-band COGs + S1 VV/VH COGs on the same 10 m grid."""
    from csmae.data.scenes.example import write_band_files, write_s1

    s2 = write_band_files(root / "s2", m.s2, crs=m.crs, transform=m.transform, tile=TILE, stamp=S2_STAMP)
    s1 = write_s1(root / "s1", m.s1[0], m.s1[1], crs=m.crs, transform=m.transform, units=s1_units,
                  name=S1_NAME)
    return s2, s1


def open_v1():
    """The v1 reader over the real pairs (an independent path to the same pixels)."""
    from csmae.data import open_dataset

    return open_dataset(V1 / "BigEarthNet-v1.0", V1 / "BigEarthNet-S1-v1.0")


def store_arrays(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """{sensor: (N, C, 120, 120)} and ids of a store, read through open_dataset."""
    from csmae.data import open_dataset

    ds = open_dataset(path)  # every sensor the store holds
    b = ds.get_batch(np.arange(len(ds)))
    return {k: b[k] for k in ds.sensors}, list(ds.ids)


# --- neighbouring S2 tiles of one datatake, overlapping as MGRS tiles do -------------------------------

#: one datatake (S2A, 2023-06-13 10:10:31), two MGRS tiles of zone 33N; a later pass of the second tile
DATATAKE = "S2A_MSIL2A_20230613T101031_N0509_R022_T{tile}_20230613T141227"
LATER = "S2B_MSIL2A_20230618T101029_N0509_R022_T{tile}_20230618T131501"
NEIGHBOUR_S1 = "S1A_IW_GRDH_1SDV_20230613T165043"
PATCH, AREA = 1200.0, 120 * 120


@dataclass
class Tile:
    product: str  # the product name (patch ids use it without the discriminator)
    x0: float  # upper-left corner on the tile's own 10 m grid (EPSG:32633)
    y0: float
    width: int  # pixels
    height: int
    holes: list[tuple[int, int, int, int]]  # (row, col, height, width) of B02 pixels set to 0 (nodata)

    @property
    def scene(self) -> str:
        return "_".join(self.product.split("_")[:6])

    def box(self) -> object:
        import shapely

        return shapely.box(self.x0, self.y0 - 10 * self.height, self.x0 + 10 * self.width, self.y0)


def neighbour_tiles() -> list[Tile]:
    """Cut-down T33UUP and T33UVP as their real grids lie: x origins 399960 + 1200 k and 499980 (so the
    two tiles' patches are 420 m apart in x, and 360 m off the place grid resp. 180 m), T33UVP a
    row lower by 360 m (as tiles of neighbouring MGRS rows, 5400000 vs 5300040). Both are 660 x 960 px
    (5 x 8 patches); their patches overlap over 3.2 km. Holes: a few nodata pixels in one tile where
    the other has data (so the tile with more valid pixels wins there), and one hole that makes a
    patch fall below --min-valid."""
    a = Tile(DATATAKE.format(tile="33UUP"), 399960 + 81 * 1200, 5400000, 660, 960,
             holes=[(370, 384, 30, 20),     # A patch (3, 3): 600 px; B's patch of that place has none
                    (725, 380, 80, 90)])    # A patch (6, 3): 7200 px = 50 %: skipped, below --min-valid
    b = Tile(DATATAKE.format(tile="33UVP"), 499980, 5400000 - 360, 660, 960,
             holes=[(514, 162, 30, 20)])    # B patch (4, 1): 600 px; A's patch of that place has none
    later = Tile(LATER.format(tile="33UVP"), b.x0, b.y0, b.width, b.height, holes=[])
    return [a, b, later]


def _world(x0: float, y0: float, w: int, h: int, seed: int) -> dict[str, np.ndarray]:
    """Smooth random S2 bands over a 10 m box of zone 33N (20 m bands on the 20 m lattice), uint16."""
    from csmae.data.scenes.example import TEN_M
    from csmae.sensors import get_sensor

    rng = np.random.default_rng(seed)
    out = {}
    for b in get_sensor("s2").bands:
        f = 1 if b in TEN_M else 2
        coarse = rng.uniform(200, 6000, size=(h // (40 // f) + 2, w // (40 // f) + 2))
        a = np.kron(coarse, np.ones((40 // f, 40 // f)))[: h // f, : w // f]
        out[b] = (a + rng.uniform(0, 300, size=a.shape)).astype(np.uint16)
    return out


def write_neighbour_tiles(root: Path, *, s1: bool = True) -> dict[str, object]:
    """The tiles of :func:`neighbour_tiles` as L2A .SAFE products cut from one world (so the same
    ground has the same pixels in both), and an S1 scene (VV/VH dB, 10 m, zone 33N) covering them all."""
    from affine import Affine
    from rasterio.crs import CRS

    from csmae.data.scenes.example import write_s1, write_safe

    tiles = neighbour_tiles()
    crs = CRS.from_epsg(32633)
    wx0 = min(t.x0 for t in tiles) - 1000  # the world: 1 km around every tile, on the 20 m lattice
    wy0 = max(t.y0 for t in tiles) + 1000
    wx1 = max(t.x0 + 10 * t.width for t in tiles) + 1000
    wy1 = min(t.y0 - 10 * t.height for t in tiles) - 1000
    ww, wh = int(round((wx1 - wx0) / 20)) * 2, int(round((wy0 - wy1) / 20)) * 2
    world = _world(wx0, wy0, ww, wh, seed=7)
    out: dict[str, object] = {"tiles": tiles, "crs": crs, "safe": []}
    for t in tiles:
        c0, r0 = int(round((t.x0 - wx0) / 10)), int(round((wy0 - t.y0) / 10))
        assert c0 % 2 == 0 and r0 % 2 == 0  # tile origins sit on the 20 m lattice of the world
        bands = {}
        for b, a in world.items():
            f = ww // a.shape[1]
            bands[b] = a[r0 // f:(r0 + t.height) // f, c0 // f:(c0 + t.width) // f].copy()
        for r, c, h, w in t.holes:
            bands["B02"][r:r + h, c:c + w] = 0
        t10 = Affine(10, 0, t.x0, 0, -10, t.y0)
        out["safe"].append(write_safe(root / "s2", bands, crs=crs, transform=t10, product=t.product))
    if s1:
        rng = np.random.default_rng(3)
        vv = rng.uniform(-20, -5, size=(wh, ww)).astype(np.float32)
        write_s1(root / "s1", vv, vv - 7, crs=crs, transform=Affine(10, 0, wx0, 0, -10, wy0),
                 name=NEIGHBOUR_S1)
        out["s1"] = root / "s1"
    return out


def reference_patches(t: Tile, crs, *, s1: bool) -> list[dict]:
    """Every grid patch of a tile, computed from the fixture alone (not the tiler): id, place (checked
    against the cell of the UTM centre), valid pixels (S2, and S2 + S1 when an S1 scene covers it),
    distance from the centre to the tile's boundary (shapely), acquisition (datatake sensing start)."""
    import shapely
    from pyproj import Transformer

    from csmae.geo.place import place_of

    to_ll = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True)
    rows, cols = (t.height - 120) // 120 + 1, (t.width - 120) // 120 + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            x, y = t.x0 + PATCH * c, t.y0 - PATCH * r  # upper-left corner
            box = shapely.box(x, y - PATCH, x + PATCH, y)
            lonlat = shapely.transform(box, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
            place = place_of(lonlat)
            cx, cy = box.centroid.x, box.centroid.y
            assert place == f"33N-{int(cx // PATCH)}-{int(cy // PATCH)}"  # the cell holding the centre
            zeros = sum(max(0, min(hr + hh, 120 * r + 120) - max(hr, 120 * r))
                        * max(0, min(hc + hw, 120 * c + 120) - max(hc, 120 * c))
                        for hr, hc, hh, hw in t.holes)
            out.append({"id": f"{t.scene}_r{r:03d}_c{c:03d}", "place": place, "s2_valid": AREA - zeros,
                        "valid": AREA - zeros + (AREA if s1 else 0),
                        "edge": box.centroid.distance(t.box().exterior), "scene": t.scene,
                        "acquisition": t.product.split("_")[2]})  # the datatake sensing start
    return out
