"""Raw Sentinel-1 GRD onto a full Sentinel-2 tile without a DEM, per stage; geolocation vs the GCPs.

What it measures:
1. A full-size GRDH (the real product of ../shared/data/s1-grd, 26,144 x 16,676 px per polarisation,
   uint16 DN written onto its geometry by tests/scenes/grd_fixtures.py, in a child process so its
   memory is not counted) is read strip by strip onto a full S2 tile grid (10,980^2 px at 10 m, UTM
   31N, 91 x 91 = 8,281 patch cells) exactly as ``csmae tile`` does for S1: decode (GDAL window
   reads), calibration (sigma0 LUT), thermal noise (range x azimuth), warp (GDAL GCP warp, TPS by
   default), cut (dB + per-patch records). Wall time, CPU time, peak RSS of this process.
2. Geolocation at the 210 GCPs for the thin-plate spline, the 3rd-order polynomial and (for
   contrast) the single affine of ``rasterio.transform.from_gcps``: the fit residual (all GCPs
   used) and the leave-one-out error (fit without the GCP, predict it: what happens between grid
   points), in metres, through GDAL's own warper (a coordinate raster warped at each GCP).

    .venv/bin/python bench/bench_grd.py                    # full tile
    .venv/bin/python bench/bench_grd.py --fraction 0.25    # the first quarter of the strips
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
#: the S2 tile grid: 10,980^2 px at 10 m in UTM 31N inside the product's footprint
TILE_ORIGIN = (460000.0, 5100000.0)
TILE = 10980


def make(work: Path) -> Path:
    from tests.scenes.grd_fixtures import make_product

    return make_product(work, full=True).safe


def _opener():
    local = threading.local()

    def open_dataset(p: str):
        import rasterio

        cache = local.__dict__.setdefault("ds", {})
        if p not in cache:
            cache[p] = rasterio.open(p)
        return cache[p]
    return open_dataset


def run_tile(safe: Path, *, fraction: float, workers: int, geocoding: str) -> dict:
    from affine import Affine
    from rasterio.crs import CRS

    from csmae.data.scenes.grd_scene import open_grd_scene
    from csmae.data.scenes.radiometry import linear_to_db

    t_all = time.perf_counter()
    c0 = time.process_time()
    scene = open_grd_scene(str(safe), geocoding=geocoding)
    t_open = time.perf_counter() - t_all
    crs = CRS.from_epsg(32631)
    base = Affine(10.0, 0, TILE_ORIGIN[0], 0, -10.0, TILE_ORIGIN[1])
    strips = int(round(91 * fraction))
    opener = _opener()
    lock = threading.Lock()
    sec: dict[str, float] = {}
    valid = [0]

    def strip(r: int) -> None:
        s: dict[str, float] = {}
        t = base * Affine.translation(0, r * 120)
        lin = scene.warp(dst_crs=crs, dst_transform=t, shape=(120, TILE), open_dataset=opener, seconds=s)
        t0 = time.perf_counter()
        db = linear_to_db(lin)
        ok = np.isfinite(lin).all(axis=0)
        recs = [db[:, :, c * 120:(c + 1) * 120].copy() for c in range(91)
                if ok[:, c * 120:(c + 1) * 120].mean() >= 0.9]
        s["cut"] = time.perf_counter() - t0
        with lock:
            valid[0] += len(recs)
            for k, v in s.items():
                sec[k] = sec.get(k, 0.0) + v

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(strip, range(strips)))
    wall = time.perf_counter() - t_all
    return {"strips": strips, "patch_cells": strips * 91, "patches_valid": valid[0], "wall_s": wall,
            "cpu_s": time.process_time() - c0, "open_s": t_open,
            "stage_s": {k: round(v, 2) for k, v in sec.items()},
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "workers": workers,
            "geocoding": geocoding}


def gcp_errors(safe: Path) -> dict:
    """Fit residual and leave-one-out error at every GCP (metres), through GDAL's warper."""
    from affine import Affine
    from pyproj import Geod, Transformer
    from rasterio.crs import CRS
    from rasterio.transform import from_gcps

    from csmae.data.scenes.grd_geocode import GcpGrid, geocode_window
    from csmae.data.scenes.grd_scene import open_grd_scene

    scene = open_grd_scene(str(safe))
    pts = scene.grid.points
    crs = CRS.from_epsg(32631)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True)
    spacing = scene.annotation["VV"].pixel_spacing

    def at(grid: GcpGrid, k: int, method: str) -> tuple[float, float]:
        line, pixel = pts[k, 0], pts[k, 1]
        l0, p0 = int(line) - 200, int(pixel) - 200  # may extend past the image: coordinates are linear
        ln, px = np.meshgrid(np.arange(l0, l0 + 400, dtype=np.float32),
                             np.arange(p0, p0 + 400, dtype=np.float32),
                             indexing="ij")
        x, y = to_utm.transform(pts[k, 3], pts[k, 2])
        t = Affine(10.0, 0, x - 15, 0, -10.0, y + 15)
        out = geocode_window(np.stack([ln, px]), l0, p0, grid, method=method, dst_crs=crs, dst_transform=t,
                             dst_shape=(3, 3))
        return float(out[0, 1, 1]) - line, float(out[1, 1, 1]) - pixel

    res: dict = {}
    for method in ("tps", "poly3"):
        fit, loo = [], []
        for k in range(len(pts)):
            dl, dp = at(scene.grid, k, method)
            fit.append(np.hypot(dl * spacing[1], dp * spacing[0]))
            keep = np.arange(len(pts)) != k
            dl, dp = at(GcpGrid(pts[keep]), k, method)
            loo.append(np.hypot(dl * spacing[1], dp * spacing[0]))
        res[method] = {"fit_median_m": float(np.nanmedian(fit)), "fit_max_m": float(np.nanmax(fit)),
                       "loo_median_m": float(np.nanmedian(loo)), "loo_max_m": float(np.nanmax(loo))}
    aff = from_gcps(scene.grid.gcps())
    x, y = aff * (pts[:, 1], pts[:, 0])
    d = Geod(ellps="WGS84").inv(np.asarray(x), np.asarray(y), pts[:, 3], pts[:, 2])[2]
    res["single affine (from_gcps)"] = {"fit_median_m": float(np.median(d)), "fit_max_m": float(np.max(d))}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", help="folder for the full-size product (default: a temporary one)")
    ap.add_argument("--fraction", type=float, default=1.0, help="fraction of the tile's 91 strips")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--geocoding", default="tps", choices=["tps", "poly3"])
    ap.add_argument("--make", help=argparse.SUPPRESS)  # child: write the product into this folder
    args = ap.parse_args()
    if args.make:
        print(make(Path(args.make)))
        return
    os.environ.setdefault("GDAL_CACHEMAX", "512")
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--make", tmp], check=True, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        safe = Path(out.stdout.strip().splitlines()[-1])
        print(f"wrote the full-size product in {time.perf_counter() - t0:.0f} s: {safe}", flush=True)
        res = {"tile": run_tile(safe, fraction=args.fraction, workers=args.workers, geocoding=args.geocoding),
               "geolocation": gcp_errors(safe), "load": os.getloadavg()}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
