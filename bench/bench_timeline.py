"""Timeline latency over a 1M-item synthetic archive, and ``csmae ingest`` per stage on a small scene.

Part 1 (``--items``): a synthetic archive (stated as such in every row): P places on the place grid of
UTM 33N (their 1200 m cells as footprints), T dates, both sensors, random unit descriptors of
``--dim``; an exact index built in memory. Times the first timeline (it groups the rows by place
once), then the median/p95 of ``--queries`` timelines of random places (reference first and previous),
of random points (lon/lat -> place), and with a date filter; peak RSS.

Part 2 (``--scene``): scripts/make_example_scene.py writes an S2 L2A .SAFE + S1 scene of
``--scene`` x ``--scene`` patches; ``ingest_scenes`` tiles, embeds (tiny random model unless
``--model``) and adds it to a new index, then a second scene into it; the seconds per stage come
from the ingest itself; a rerun (both skipped) is timed too.

    nice -n 5 .venv/bin/python bench/bench_timeline.py --items 1000000 --dim 256 --scene 10
    .venv/bin/python bench/bench_timeline.py --items 20000 --queries 50 --scene 3   # smoke

Prints Markdown table rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def synthetic_index(items: int, dim: int, dates: int, seed: int = 0):
    """An exact in-memory index of ``items`` synthetic items: places x dates x {s1, s2}."""
    import pandas as pd
    import shapely
    from pyproj import Transformer

    from csmae.retrieval.embeddings import Embeddings
    from csmae.retrieval.index import build_index

    rng = np.random.default_rng(seed)
    n_places = max(1, items // (2 * dates))
    side = int(np.ceil(np.sqrt(n_places)))
    col = 300 + np.arange(n_places) % side
    row = 4400 + np.arange(n_places) // side
    x0, y0 = col * 1200.0, row * 1200.0
    xs = np.stack([x0, x0 + 1200, x0 + 1200, x0, x0], 1)
    ys = np.stack([y0, y0, y0 + 1200, y0 + 1200, y0], 1)
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(xs, ys)
    polys = shapely.polygons(np.stack([lon, lat], axis=-1))
    wkb = shapely.to_wkb(polys)
    keys = np.array([f"33N-{c}-{r}" for c, r in zip(col, row, strict=True)], dtype=object)
    bounds = shapely.bounds(polys)
    n = n_places * dates * 2
    p = np.repeat(np.arange(n_places), dates * 2)
    d = np.tile(np.repeat(np.arange(dates), 2), n_places)
    sensors = np.tile(np.array(["s1", "s2"], dtype=object), n_places * dates)
    day0 = np.datetime64("2018-01-05T10:00:00")
    when = day0 + (d * 6 * 86400 + (sensors == "s1") * 25200).astype("timedelta64[s]")
    ids = np.array([f"P{a:06d}_D{b:03d}" for a, b in zip(p, d, strict=True)], dtype=object)
    vec = rng.standard_normal((n, dim), dtype=np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    meta = pd.DataFrame({"geometry": list(wkb[p]), "bbox_xmin": bounds[p, 0], "bbox_ymin": bounds[p, 1],
                         "bbox_xmax": bounds[p, 2], "bbox_ymax": bounds[p, 3],
                         "datetime": pd.to_datetime(when).tz_localize("UTC"), "place": keys[p]})
    emb = Embeddings(ids=ids, sensors=sensors, splits=np.full(n, "test", dtype=object),
                     labels=np.zeros((n, 19), bool), vectors=vec, meta=meta,
                     manifest={"sensors": {"s1": {}, "s2": {}}})
    index = build_index(emb, kind="exact")
    centres = np.column_stack([lon[:, :4].mean(1), lat[:, :4].mean(1)])
    return index, keys, centres


def _at(core, centre: np.ndarray) -> object:
    from csmae.retrieval.timeline import place_timeline

    return place_timeline(core, lon=float(centre[0]), lat=float(centre[1]))


def bench_timeline(args: argparse.Namespace) -> None:
    from csmae.retrieval.search_core import SearchCore
    from csmae.retrieval.timeline import place_timeline

    t = time.perf_counter()
    index, keys, centres = synthetic_index(args.items, args.dim, args.dates)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    core = SearchCore(index)
    core_s = time.perf_counter() - t
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    place_timeline(core, place=str(keys[0]))
    first_ms = (time.perf_counter() - t) * 1000

    def timed(fn) -> tuple[float, float]:
        ms = []
        for _ in range(args.queries):
            t0 = time.perf_counter()
            fn()
            ms.append((time.perf_counter() - t0) * 1000)
        ms.sort()
        return statistics.median(ms), ms[int(0.95 * (len(ms) - 1))]

    def pick() -> int:
        return int(rng.integers(len(keys)))

    rows = {
        "place, reference first": timed(lambda: place_timeline(core, place=str(keys[pick()]))),
        "place, reference previous": timed(lambda: place_timeline(core, place=str(keys[pick()]),
                                                                  reference="previous")),
        "point (lon/lat -> place)": timed(lambda: _at(core, centres[pick()])),
        "place + date filter (start/end)": timed(lambda: place_timeline(
            core, place=str(keys[pick()]), where={"start": "2018-02-01", "end": "2018-03-31"})),
    }
    n = len(index.items)
    print(f"\nsynthetic archive: {n:,} items ({len(keys):,} places x {args.dates} dates x 2 sensors), "
          f"D={args.dim}, exact index built in {build_s:.1f} s, search core {core_s:.1f} s, first timeline "
          f"{first_ms:.0f} ms (groups the rows by place once), peak RSS {peak_rss_gb():.2f} GB\n")
    print("| timeline query (synthetic, " + f"{n:,} items" + ") | acquisitions | median ms | p95 ms |")
    print("|---|---:|---:|---:|")
    for name, (med, p95) in rows.items():
        print(f"| {name} | {2 * args.dates} | {med:.2f} | {p95:.2f} |")


def bench_ingest(args: argparse.Namespace) -> None:
    from csmae.retrieval.ingest import ingest_scenes

    script = ROOT / "scripts" / "make_example_scene.py"
    spec = importlib.util.spec_from_file_location("make_example_scene", script)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        mod.make(tmp / "scenes", rows=args.scene, cols=args.scene)
        safe = next((tmp / "scenes").glob("*.SAFE"))
        later = shutil.copytree(safe, safe.with_name(safe.name.replace("20230613", "20230703", 1)))
        model = args.model
        if model is None:
            import torch

            import csmae

            torch.manual_seed(0)
            csmae.create_model("csmae_sesd_tiny").save_pretrained(tmp / "model")
            model = str(tmp / "model")
        index = tmp / "index"
        print("\n| ingest (example scene) | patches | plan s | checksum s | tile s | embed s | add s "
              "| total s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, scene in (("first scene (new index)", safe), ("second scene (add)", later),
                            ("rerun (both skipped)", None)):
            t = time.perf_counter()
            s2 = [str(safe), str(later)] if scene is None else [str(scene)]
            paths = {"s2": s2, "s1": [str(tmp / "scenes" / "s1")]}
            res = ingest_scenes(index, model_dir=model, paths=paths, precision=args.precision, device="cpu")
            total = time.perf_counter() - t
            sec = res.seconds
            patches = sum(r["patches"] for r in res.ingested)
            cells = " | ".join(f"{sec.get(k, 0):.2f}" for k in ("plan", "checksum", "tile", "embed", "add"))
            print(f"| {name} | {patches} | {cells} | {total:.2f} |")
        which = "tiny random" if args.model is None else model
        print(f"\npeak RSS of the process {peak_rss_gb():.2f} GB; model {which}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1_000_000, help="synthetic archive items (0: skip)")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--dates", type=int, default=20, help="dates per place and sensor")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--scene", type=int, default=10, help="example scene side in patches (0: skip)")
    p.add_argument("--model", help="model folder for the ingest part (default: a tiny random model)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    args = p.parse_args()
    print(f"load before: {os.getloadavg()[0]:.1f}")
    if args.items:
        bench_timeline(args)
    if args.scene:
        bench_ingest(args)
    print(f"\nload after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
