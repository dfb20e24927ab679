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
