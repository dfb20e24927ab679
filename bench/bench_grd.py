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
    .venv/bin/python bench/bench_grd.py --fraction 0.1 --dem-strips 5   # + the DEM path (sarsen)

3. ``--dem-strips N``: the terrain-corrected path (sarsen) on N strips with a 30 m DEM made of the
   grid's own heights, extrapolated to the tile; and the distance between the GCP (TPS) mapping and
   the orbit + DEM mapping over the whole tile (300 m nodes), in metres.
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


def write_grid_dem(path: Path, points: np.ndarray, res: float = 0.0003) -> None:
    """A ~30 m lon/lat DEM over the product whose heights interpolate the GCP grid's (linear)."""
    import rasterio
    from affine import Affine
    from scipy.interpolate import griddata

    w, s, e, n = points[:, 3].min() - 0.05, points[:, 2].min() - 0.05, points[:, 3].max() + 0.05, \
        points[:, 2].max() + 0.05
    lon = np.arange(w, e, res) + res / 2
    lat = np.arange(n, s, -res) - res / 2
    with rasterio.open(path, "w", driver="GTiff", width=len(lon), height=len(lat), count=1, dtype="float32",
                       crs="EPSG:4326", transform=Affine(res, 0, w, 0, -res, n), tiled=True,
                       compress="deflate") as dst:
        for y0 in range(0, len(lat), 1024):
            gx, gy = np.meshgrid(lon, lat[y0:y0 + 1024])
            z = griddata(points[:, [3, 2]], points[:, 4], (gx, gy), method="linear")
            near = griddata(points[:, [3, 2]], points[:, 4], (gx, gy), method="nearest")
            dst.write(np.where(np.isnan(z), near, z).astype(np.float32)[None],
                      window=rasterio.windows.Window(0, y0, len(lon), gx.shape[0]))


def dem_path(safe: Path, strips: int) -> dict:
    """The DEM path on the first ``strips`` strips (30 m DEM of the grid's own heights), and the
    agreement of GCP (TPS) geocoding with the orbit + DEM geometry over the whole tile (300 m nodes)."""
    from affine import Affine
    from rasterio.crs import CRS

    from csmae.data.scenes.grd_scene import open_grd_scene

    dem = safe.parent / "dem30.tif"
    t0 = time.perf_counter()
    scene = open_grd_scene(str(safe))
    write_grid_dem(dem, scene.grid.points)
    t_dem = time.perf_counter() - t0
    withdem = open_grd_scene(str(safe), dem=str(dem))
    crs = CRS.from_epsg(32631)
    base = Affine(10.0, 0, TILE_ORIGIN[0], 0, -10.0, TILE_ORIGIN[1])
    opener = _opener()
    sec: dict[str, float] = {}
    c0, t0 = time.process_time(), time.perf_counter()
    for r in range(strips):
        withdem.warp(dst_crs=crs, dst_transform=base * Affine.translation(0, r * 120), shape=(120, TILE),
                     open_dataset=opener, seconds=sec)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    coarse = base * Affine.scale(30)  # 300 m nodes over the tile
    shape = (TILE // 30, TILE // 30)
    a = np.full((2, *shape), np.nan, dtype=np.float32)
    k = 40  # blocks of 40 x 40 nodes (12 km): the GCP mapping reads a coordinate raster per block
    for by in range(0, shape[0], k):
        for bx in range(0, shape[1], k):
            h, w = min(k, shape[0] - by), min(k, shape[1] - bx)
            t = coarse * Affine.translation(bx, by)
            a[:, by:by + h, bx:bx + w] = scene.coords(dst_crs=crs, dst_transform=t, shape=(h, w))
    b = withdem.dem.coords(dst_crs=crs, dst_transform=coarse, shape=shape, step=1)  # type: ignore[union-attr]
    inside = np.isfinite(a).all(axis=0) & (a[0] >= 0) & (a[0] < scene.lines) & (a[1] >= 0) & \
        (a[1] < scene.samples)
    sp = scene.annotation["VV"].pixel_spacing
    d = np.hypot((a[0] - b[0]) * sp[1], (a[1] - b[1]) * sp[0])[inside]
    return {"strips": strips, "wall_s": wall, "cpu_s": cpu,
            "stage_s": {name: round(v, 2) for name, v in sec.items()},
            "per_tile_wall_s_extrapolated": wall * 91 / strips, "dem_write_s": t_dem,
            "tps_vs_dem_geometry_m": {"median": float(np.median(d)), "p95": float(np.quantile(d, 0.95)),
                                      "max": float(d.max()), "nodes": int(d.size)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", help="folder for the full-size product (default: a temporary one)")
    ap.add_argument("--fraction", type=float, default=1.0, help="fraction of the tile's 91 strips")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--geocoding", default="tps", choices=["tps", "poly3"])
    ap.add_argument("--dem-strips", type=int, default=0, help="also run the --dem path on this many strips")
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
        if args.dem_strips:
            res["dem"] = dem_path(safe, args.dem_strips)
            res["load_after_dem"] = os.getloadavg()
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
