"""``csmae tile`` on a full-size Sentinel-2 L2A tile with an S1 scene on another grid.

Run: nice -n 5 .venv/bin/python bench/bench_tile.py [--size 10980] [--workers 2] [--layout float32]
     [--workdir /tmp/csmae-bench-tile] [--keep]

Writes once (then deletes, unless --keep) a synthetic scene in real COG layout:
- S2: 4 bands at 10 m (size x size uint16) and 6 at 20 m (size/2), one COG per band, named like
  Earth Search / SAFE band files, DEFLATE + horizontal predictor, 512x512 internal tiles, overviews;
  pixels are smooth land-cover-like fields with sensor noise (compress like real bands, ~1.5-2x);
- S1: VV and VH float32 linear power COGs in the neighbouring UTM zone at 20 m, covering the tile
  (so every strip is a real reprojection, not a copy).
Then runs ``csmae tile`` in a child process (wall time, CPU seconds and peak RSS of the child from
getrusage; on a shared machine CPU seconds / workers is the wall time 2 free cores would need) and
reads the per-stage seconds the run records in its manifest (decode, harmonise, warp, upsample,
build, write; wall seconds summed over worker threads, so they include waiting for a core or the
disk). The floor: the same S2 bytes decoded alone (every band read block row by block row in one
thread, no other work): its wall time divided by the workers, and its CPU seconds.
Prints one Markdown table row and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TEN = ("B02", "B03", "B04", "B08")
TWENTY = ("B05", "B06", "B07", "B8A", "B11", "B12")
COG = {"driver": "COG", "compress": "DEFLATE", "predictor": 2, "blocksize": 512, "overviews": "AUTO"}


def smooth(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """A smooth field in [0, 1] of shape (h, w): bilinear upsampling of a random (cells+1)^2 grid."""
    g = rng.random((cells + 1, cells + 1))
    ys, xs = np.linspace(0, cells, h), np.linspace(0, cells, w)
    iy, ix = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - iy)[:, None], (xs - ix)[None, :]
    return (g[iy][:, ix] * (1 - fy) * (1 - fx) + g[iy + 1][:, ix] * fy * (1 - fx)
            + g[iy][:, ix + 1] * (1 - fy) * fx + g[iy + 1][:, ix + 1] * fy * fx)


def write_band(path: Path, h: int, w: int, transform, crs, seed: int, dtype: str, scale: float,
               offset: float) -> None:
    """One band written in 1024-row chunks into a tiled GTiff, then copied to a COG."""
    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp.tif")
    field = smooth(rng, h // 16 + 1, w // 16 + 1, 40)  # coarse land-cover-like field
    with rasterio.open(tmp, "w", driver="GTiff", width=w, height=h, count=1, dtype=dtype, crs=crs,
                       transform=transform, tiled=True, blockxsize=512, blockysize=512,
                       compress="DEFLATE", predictor=2) as dst:
        for y in range(0, h, 1024):
            n = min(1024, h - y)
            rows = np.repeat(np.repeat(field[y // 16:(y + n) // 16 + 1], 16, axis=0), 16, axis=1)
            rows = rows[(y % 16):(y % 16) + n, :w]
            a = offset + scale * rows + rng.normal(0, 0.03 * scale, size=(n, w))
            dst.write(np.clip(a, 1, None).astype(dtype), 1, window=Window(0, y, w, n))
    rio_copy(tmp, path, **COG)
    tmp.unlink()


def make_scene(work: Path, size: int) -> tuple[Path, Path]:
    from affine import Affine
    from pyproj import Transformer
    from rasterio.crs import CRS

    crs = CRS.from_epsg(32633)
    t10 = Affine(10, 0, 399960, 0, -10, 5400000)  # T33UUP's real origin
    s2, s1 = work / "s2", work / "s1"
    s2.mkdir(parents=True)
    s1.mkdir(parents=True)
    for i, b in enumerate(TEN + TWENTY):
        at10 = b in TEN
        n = size if at10 else size // 2
        t = t10 if at10 else t10 * Affine.scale(2)
        write_band(s2 / f"T33UUP_20230613T101031_{b}_{'10' if at10 else '20'}m.tif", n, n, t, crs, i,
                   "uint16", 3000.0, 1000.0 + 100 * i)
    other = CRS.from_epsg(32632)
    tr = Transformer.from_crs(crs.to_wkt(), other.to_wkt(), always_xy=True)
    xs = [t10.c, t10.c + 10 * size, t10.c, t10.c + 10 * size]
    ys = [t10.f, t10.f, t10.f - 10 * size, t10.f - 10 * size]
    ox, oy = tr.transform(xs, ys)
    left, right = np.floor(min(ox) / 20) * 20 - 2000, np.ceil(max(ox) / 20) * 20 + 2000
    bottom, top = np.floor(min(oy) / 20) * 20 - 2000, np.ceil(max(oy) / 20) * 20 + 2000
    w, h = int((right - left) / 20), int((top - bottom) / 20)
    for j, p in enumerate(("VV", "VH")):
        write_band(s1 / f"S1A_IW_GRDH_1SDV_20230613T165043_{p}.tif", h, w, Affine(20, 0, left, 0, -20, top),
                   other, 100 + j, "float32", 0.08, 0.005)
    return s2, s1


def decode_floor(files: list[Path]) -> tuple[int, float, float]:
    """(bytes decoded, wall s, CPU s) to read every band whole, block row by block row, in one thread."""
    import rasterio
    from rasterio.windows import Window

    nbytes, t0, c0 = 0, time.perf_counter(), time.process_time()
    for f in files:
        with rasterio.open(f) as src:
            bh = src.block_shapes[0][0]
            for y in range(0, src.height, bh):
                a = src.read(1, window=Window(0, y, src.width, min(bh, src.height - y)))
                nbytes += a.nbytes
    return nbytes, time.perf_counter() - t0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10980)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--layout", choices=["float32", "native"], default="float32")
    ap.add_argument("--workdir", default="/tmp/csmae-bench-tile")
    ap.add_argument("--keep", action="store_true", help="keep the scene (and reuse it next time)")
    args = ap.parse_args()
    work = Path(args.workdir) / str(args.size)
    made = False
    if not (work / "s1").exists():
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.perf_counter()
        make_scene(work, args.size)
        made = True
        print(f"wrote the scene in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    s2, s1 = work / "s2", work / "s1"
    src_bytes = sum(f.stat().st_size for f in [*s2.iterdir(), *s1.iterdir()])
    store = work / f"store-{args.layout}"
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(store.with_name(store.name + ".partial"), ignore_errors=True)
    for f in [*s2.iterdir(), *s1.iterdir()]:  # page cache warm for both runs: decode is measured, not disk
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    cmd = [sys.executable, "-m", "csmae", "tile", "--s2", str(s2), "--s1", str(s1), "--out", str(store),
           "--workers", str(args.workers), "--layout", args.layout]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        return 1
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss_gb = ru.ru_maxrss * 1024 / 1e9
    cpu = ru.ru_utime + ru.ru_stime  # CPU seconds the run used: what load cannot inflate much
    man = json.loads((store / "manifest.json").read_text())
    patches = man["counts"]["pairs"]
    sec = man["tiling"]["seconds"]
    store_bytes = sum(f.stat().st_blocks * 512 for f in store.iterdir())
    s2_files = sorted(s2.iterdir())
    nbytes, dec, dec_cpu = decode_floor(s2_files)  # S2 only: S1 is read per strip through its own windows
    floor = dec / args.workers
    out = {"size": args.size, "workers": args.workers, "layout": args.layout, "patches": patches,
           "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "patches_per_s": round(patches / wall, 1),
           "peak_rss_gb": round(rss_gb, 2), "stage_thread_s": {k: round(v, 1) for k, v in sec.items()},
           "s2_decoded_gb": round(nbytes / 1e9, 2), "decode_alone_s_1thread": round(dec, 1),
           "decode_alone_cpu_s": round(dec_cpu, 1), "decode_gb_per_cpu_s": round(nbytes / 1e9 / dec_cpu, 3),
           "floor_s": round(floor, 1), "cog_bytes_gb": round(src_bytes / 1e9, 2),
           "store_gb": round(store_bytes / 1e9, 2), "load": os.getloadavg()}
    print(json.dumps(out))
    print(f"| {args.size}x{args.size} | {args.layout} | {args.workers} | {patches:,} | {wall:.1f} s | "
          f"{cpu:.0f} s | {patches / wall:.0f} | {rss_gb:.2f} GB | "
          + ", ".join(f"{k} {v:.0f}" for k, v in sec.items()) + f" | {floor:.1f} s | {dec_cpu:.1f} s |")
    shutil.rmtree(store, ignore_errors=True)
    if made and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
