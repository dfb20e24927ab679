"""Raw Sentinel-1 GRD onto a full Sentinel-2 tile, per stage, with and without a DEM; geolocation vs the GCPs.

What it measures:
1. A full-size GRDH (the real product of ../shared/data/s1-grd, 26,144 x 16,676 px per polarisation,
   uint16 DN written onto its geometry by tests/scenes/grd_fixtures.py, in a child process so its
   memory is not counted) is read strip by strip onto a full S2 tile grid (10,980^2 px at 10 m, UTM
   31N, 91 x 91 = 8,281 patch cells) exactly as ``csmae tile`` does for S1: decode (GDAL window
   reads), calibration (sigma0 LUT), thermal noise (range x azimuth), geometry ("geocode": GCP
   spline, or orbit + DEM), warp (bilinear sampling of the calibrated window), cut (dB + per-patch
   records). Wall time, CPU time, peak RSS; each run in its own child process (its own peak RSS).
2. ``--dem``: the same with a synthetic ~30 m DEM (lon/lat, 0.0003 deg: the product grid's own
   heights, linear between GCPs, plus 0-400 m of synthetic relief), terrain-corrected through sarsen.
   Runs, in this order: the lattice geometry (this code), the no-DEM path, and, with
   ``--before-src DIR`` (a ``src`` folder of the code before, e.g. ``git archive 2a03cc3 src``), the
   previous DEM code (sarsen at every 30 m node, one call per 1,200-column segment); then the lattice
   again, so the two sides see the same load. Also the lattice against sarsen solving every node /
   every pixel on sample windows of the tile (px).
3. Geolocation at the 210 GCPs for the thin-plate spline, the 3rd-order polynomial and (for
   contrast) the single affine of ``rasterio.transform.from_gcps``: the fit residual (all GCPs
   used) and the leave-one-out error (fit without the GCP, predict it: what happens between grid
   points), in metres, through GDAL's own warper (a coordinate raster warped at each GCP).

    .venv/bin/python bench/bench_grd.py --workers 2                      # no DEM, full tile
    .venv/bin/python bench/bench_grd.py --workers 2 --dem --before-src /tmp/old/src   # + DEM, before/after
    .venv/bin/python bench/bench_grd.py --fraction 0.1 --dem              # 9 strips of each
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


def peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM: its own address space since exec; ``ru_maxrss`` would
    carry the parent's RSS at fork into a child)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


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


def run_tile(safe: Path, *, fraction: float, workers: int, geocoding: str, dem: str | None = None) -> dict:
    from affine import Affine
    from rasterio.crs import CRS

    from csmae.data.scenes.grd_scene import open_grd_scene
    from csmae.data.scenes.radiometry import linear_to_db

    t_all = time.perf_counter()
    c0 = time.process_time()
    scene = open_grd_scene(str(safe), geocoding=geocoding, dem=dem)
    if scene.dem is not None:  # sarsen opens the product (xarray-sentinel parses the annotation) once
        scene.dem._open()
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
            "geometry_s": {k: round(v, 2) for k, v in (getattr(scene.dem, "seconds", None) or {}).items()},
            "peak_rss_gb": peak_rss_gb(), "workers": workers,
            "geocoding": "orbit + DEM (sarsen)" if dem else geocoding, "load": os.getloadavg()}


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


def write_grid_dem(path: Path, points: np.ndarray, res: float = 0.0003, relief_m: float = 400.0) -> None:
    """A synthetic ~30 m lon/lat DEM over the product: the GCP grid's heights (linear between GCPs, on a
    0.003 deg grid, bilinear below it) plus ``relief_m`` of synthetic relief (ridges 1-5 km apart)."""
    import rasterio
    from affine import Affine
    from scipy.interpolate import griddata
    from scipy.ndimage import map_coordinates

    w, s, e, n = points[:, 3].min() - 0.05, points[:, 2].min() - 0.05, points[:, 3].max() + 0.05, \
        points[:, 2].max() + 0.05
    coarse = res * 10
    clon = np.arange(w, e + coarse, coarse)
    clat = np.arange(n, s - coarse, -coarse)
    gx, gy = np.meshgrid(clon, clat)
    z0 = griddata(points[:, [3, 2]], points[:, 4], (gx, gy), method="linear")
    z0 = np.where(np.isnan(z0), griddata(points[:, [3, 2]], points[:, 4], (gx, gy), method="nearest"), z0)
    lon = np.arange(w, e, res) + res / 2
    lat = np.arange(n, s, -res) - res / 2
    with rasterio.open(path, "w", driver="GTiff", width=len(lon), height=len(lat), count=1, dtype="float32",
                       crs="EPSG:4326", transform=Affine(res, 0, w, 0, -res, n), tiled=True,
                       compress="deflate") as dst:
        for y0 in range(0, len(lat), 1024):
            la = lat[y0:y0 + 1024]
            fr, fc = np.meshgrid((n - la) / coarse, (lon - w) / coarse, indexing="ij")
            z = map_coordinates(z0, [fr, fc], order=1, mode="nearest")
            ox, oy = np.meshgrid(lon, la)
            z += relief_m * 0.5 * (1 + np.sin(ox * 130.0) * np.cos(oy * 170.0)) * \
                (0.6 + 0.4 * np.sin(ox * 37.0 + oy * 23.0))
            dst.write(z.astype(np.float32)[None], window=rasterio.windows.Window(0, y0, len(lon), len(la)))


def lattice_error(safe: Path, dem: str, windows: int = 3) -> dict:
    """The lattice geometry against sarsen solving every node (30 m) and every pixel (10 m) on sample
    windows of the tile (120 x 1,200 px each, spread over it): (line, pixel) differences in px."""
    from affine import Affine
    from rasterio.crs import CRS

    from csmae.data.scenes.grd_dem import DemGeometry

    crs = CRS.from_epsg(32631)
    base = Affine(10.0, 0, TILE_ORIGIN[0], 0, -10.0, TILE_ORIGIN[1])
    lattice = DemGeometry(dem_path=dem, product_path=str(safe))
    exact = DemGeometry(dem_path=dem, product_path=str(safe), method="points")
    res: dict = {}
    for step, name in ((3, "vs_sarsen_every_node"), (1, "vs_sarsen_every_pixel")):
        errs = []
        for k in range(windows):
            t = base @ Affine.translation(4800 * k, 120 * (45 * k))
            a = lattice.coords(dst_crs=crs, dst_transform=t, shape=(120, 1200), step=step)
            b = exact.coords(dst_crs=crs, dst_transform=t, shape=(120, 1200), step=step)
            errs.append(np.abs(a - b).reshape(2, -1))
        e = np.concatenate(errs, axis=1)
        res[name] = {"pixels": int(e.shape[1]), "line_max": float(np.nanmax(e[0])),
                     "pixel_max": float(np.nanmax(e[1])), "line_median": float(np.nanmedian(e[0])),
                     "pixel_median": float(np.nanmedian(e[1]))}
    return res


def dem_agreement(safe: Path, dem: str) -> dict:
    """The GCP (TPS) mapping against the orbit + DEM mapping over the whole tile (300 m nodes), metres."""
    from affine import Affine
    from rasterio.crs import CRS

    from csmae.data.scenes.grd_scene import open_grd_scene

    scene = open_grd_scene(str(safe))
    withdem = open_grd_scene(str(safe), dem=dem)
    crs = CRS.from_epsg(32631)
    coarse = Affine(10.0, 0, TILE_ORIGIN[0], 0, -10.0, TILE_ORIGIN[1]) @ Affine.scale(30)
    shape = (TILE // 30, TILE // 30)
    a = np.full((2, *shape), np.nan, dtype=np.float32)
    k = 40  # blocks of 40 x 40 nodes (12 km): the GCP mapping reads a coordinate raster per block
    for by in range(0, shape[0], k):
        for bx in range(0, shape[1], k):
            h, w = min(k, shape[0] - by), min(k, shape[1] - bx)
            t = coarse @ Affine.translation(bx, by)
            a[:, by:by + h, bx:bx + w] = scene.coords(dst_crs=crs, dst_transform=t, shape=(h, w))
    b = withdem.dem.coords(dst_crs=crs, dst_transform=coarse, shape=shape, step=1)  # type: ignore[union-attr]
    inside = np.isfinite(a).all(axis=0) & (a[0] >= 0) & (a[0] < scene.lines) & (a[1] >= 0) & \
        (a[1] < scene.samples)
    sp = scene.annotation["VV"].pixel_spacing
    d = np.hypot((a[0] - b[0]) * sp[1], (a[1] - b[1]) * sp[0])[inside]
    return {"median": float(np.median(d)), "p95": float(np.quantile(d, 0.95)), "max": float(d.max()),
            "nodes": int(d.size)}


def _child(args: list[str], src: str | None = None) -> dict:
    """Run this file with ``args`` in a child process (its own peak RSS); ``src``: the csmae source to use."""
    path = os.pathsep.join([src, str(REPO)] if src else sys.path)
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": path})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", help="folder for the full-size product (default: a temporary one)")
    ap.add_argument("--fraction", type=float, default=1.0, help="fraction of the tile's 91 strips")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--geocoding", default="tps", choices=["tps", "poly3"])
    ap.add_argument("--dem", action="store_true",
                    help="also the --dem path (synthetic 30 m DEM), before/after")
    ap.add_argument("--before-src", help="a csmae src folder of the code before, for the DEM 'before' run")
    ap.add_argument("--no-geolocation", action="store_true", help="skip the GCP geolocation errors")
    ap.add_argument("--product", help="folder for the full-size product and DEM, kept and reused (default: a "
                                      "temporary folder, removed)")
    ap.add_argument("--make", help=argparse.SUPPRESS)  # child: write the product into this folder
    ap.add_argument("--run", nargs=2, metavar=("SAFE", "DEM"), help=argparse.SUPPRESS)  # child: one tile run
    args = ap.parse_args()
    if args.make:
        print(make(Path(args.make)))
        return
    os.environ.setdefault("GDAL_CACHEMAX", "512")
    if args.run:
        dem = None if args.run[1] == "-" else args.run[1]
        print(json.dumps(run_tile(Path(args.run[0]), fraction=args.fraction, workers=args.workers,
                                  geocoding=args.geocoding, dem=dem)))
        return
    print(f"load at start: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        folder = Path(args.product or tmp)
        safe = next(folder.glob("*.SAFE"), None)
        if safe is None or not (folder / "complete").exists():
            folder.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--make", str(folder)], check=True,
                                 capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
            safe = Path(out.stdout.strip().splitlines()[-1])
            (folder / "complete").touch()
            print(f"wrote the full-size product in {time.perf_counter() - t0:.0f} s: {safe}", flush=True)
        common = ["--fraction", str(args.fraction), "--workers", str(args.workers),
                  "--geocoding", args.geocoding]
        res: dict = {}
        if args.dem:
            from csmae.data.scenes.grd_scene import open_grd_scene

            dem = safe.parent / "dem30.tif"
            if not dem.exists():
                t0 = time.perf_counter()
                write_grid_dem(dem, open_grd_scene(str(safe)).grid.points)
                print(f"wrote the synthetic 30 m DEM in {time.perf_counter() - t0:.0f} s", flush=True)
            runs = [("dem_lattice", None, str(dem)), ("no_dem", None, "-")]
            if args.before_src:
                runs.append(("dem_before", args.before_src, str(dem)))
            runs.append(("dem_lattice_again", None, str(dem)))
            for name, src, d in runs:
                res[name] = _child([*common, "--run", str(safe), d], src)
                print(name, json.dumps(res[name]), flush=True)
            res["lattice_error_px"] = lattice_error(safe, str(dem))
            res["tps_vs_dem_geometry_m"] = dem_agreement(safe, str(dem))
        else:
            res["no_dem"] = _child([*common, "--run", str(safe), "-"])
        if not args.no_geolocation:
            res["geolocation"] = gcp_errors(safe)
    res["load_at_end"] = os.getloadavg()
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
