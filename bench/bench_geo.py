"""What the geo columns cost: embeddings shards with vs without them, and the per-pair geo metadata.

1. Write and load an embeddings folder of N rows x D (two shards) once with the GeoParquet columns
   (geometry WKB, bbox, datetime, country, season, scene) and once without (the old layout);
   report write and load seconds and bytes on disk.
2. The v1 reader on the real pairs: pixels (``read_arrays``) vs geo metadata (``metadata``) per pair,
   warm (the CRS is parsed once per process).

Usage: python bench/bench_geo.py [--n 200000] [--dim 768] [--work /tmp/bench-geo]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np


def _folder(path: Path, n: int, dim: int, geo: bool) -> float:
    import shapely

    from csmae.retrieval.embeddings import KIND, write_shard

    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    shards, t = [], 0.0
    for k, (lo, hi) in enumerate(((0, n // 2), (n // 2, n))):
        m = hi - lo
        vec = rng.normal(size=(m, dim)).astype(np.float32)
        meta = None
        if geo:
            x = rng.uniform(-10, 30, m)
            y = rng.uniform(38, 70, m)
            meta = {"geometry": list(shapely.to_wkb(shapely.box(x, y, x + 0.017, y + 0.011))),
                    "datetime": ["2017-06-13T10:10:31Z"] * m, "country": ["Austria"] * m,
                    "season": ["Summer"] * m, "scene": ["S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP"] * m}
        t0 = time.perf_counter()
        f = path / f"part-{k:05d}.parquet"
        write_shard(f, ids=[f"p{i}" for i in range(lo, hi)], sensors=["s1", "s2"] * (m // 2),
                    splits=["test"] * m, labels=rng.random((m, 19)) < 0.2, vectors=vec, meta=meta)
        t += time.perf_counter() - t0
        if not geo:  # the layout before the geo columns: id, sensor, split, labels, vector only
            import pyarrow.parquet as pq

            table = pq.read_table(f).select(["id", "sensor", "split", "labels", "vector"])
            pq.write_table(table.replace_schema_metadata(None), f)
        shards.append({"file": f"part-{k:05d}.parquet", "rows": m})
    (path / "manifest.json").write_text(json.dumps({"kind": KIND, "dim": dim, "count": n, "shards": shards}))
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--work", default="/tmp/bench-geo")
    args = ap.parse_args()
    from csmae.retrieval.embeddings import load_embeddings

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    for geo in (False, True):
        folder = work / ("geo" if geo else "plain")
        w = _folder(folder, args.n, args.dim, geo)
        size = sum(f.stat().st_size for f in folder.iterdir())
        t0 = time.perf_counter()
        emb = load_embeddings(folder)
        load = time.perf_counter() - t0
        assert (emb.meta is not None) == geo
        write = f"write {w:.2f} s (null geo columns), " if not geo else f"write {w:.2f} s, "
        print(f"{'with' if geo else 'without'} geo columns: {args.n} x {args.dim}: {write}"
              f"load {load:.2f} s, {size / 1e6:.1f} MB")
        del emb
    shutil.rmtree(work, ignore_errors=True)

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "bigearthnet-v1"
    if data.exists():
        from csmae.data import open_dataset

        ds = open_dataset(data / "BigEarthNet-v1.0", data / "BigEarthNet-S1-v1.0", data / "tables")
        for i in range(len(ds)):  # warm: files cached, CRS parsed
            ds.read_arrays(i), ds.metadata(i)
        reps = 20
        t0 = time.perf_counter()
        for _ in range(reps):
            for i in range(len(ds)):
                ds.read_arrays(i)
        px = (time.perf_counter() - t0) / reps / len(ds)
        t0 = time.perf_counter()
        for _ in range(reps):
            for i in range(len(ds)):
                ds.metadata(i)
        md = (time.perf_counter() - t0) / reps / len(ds)
        print(f"v1 reader per pair: pixels {px * 1e3:.2f} ms, geo metadata {md * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
