"""Milvus Lite vs FAISS on the same vectors and filters (not a test). Prints a Markdown table.

N synthetic clustered unit vectors (default 100,000 x 768: 1,000 Gaussian clusters around random
centres), items carrying three labels of known frequency (1 %, 10 %, 50 %) so that a ``labels_any``
filter has that selectivity. For each filter (none, 1 %, 10 %, 50 %):

* FAISS: ``IndexFlatIP`` with an ``IDSelectorBitmap`` of the allowed rows (the exact reference);
* Milvus Lite FLAT through csmae's :class:`MilvusBackend` (the Filter as a Milvus expression plus
  the allowed rows, exactly as an index search passes them);
* Milvus Lite HNSW (M=32, efConstruction=200, ef tuned to recall@10 >= 0.95 unfiltered), FAISS
  HNSW32 (efSearch 128) beside it.

Reported: top-10 agreement with the FAISS exact ids (FLAT must be 1.000 = identical ids), median
and p95 single-query latency (one query per call, FAISS and BLAS at one thread), build time,
peak RSS. Milvus Lite runs in this process (a gRPC server on a thread + numpy/FAISS); it is not
the Milvus server, and its numbers say nothing about a standalone or distributed deployment.

With ``--server`` (``start``: a Milvus 2.3.5 standalone started here from the dev extra's ``milvus``
package, as the tests do; or a URI) the same FLAT / HNSW searches run against the server too, and
``--clients 1,8`` adds queries/s with that many concurrent clients (threads, one query per call,
unfiltered and the 10 % filter) for every engine.

  OMP_NUM_THREADS=1 .venv/bin/python bench/bench_milvus.py [--n 100000] [--queries 200] [--no-hnsw]
  PYTHONPATH=.:src .venv/bin/python bench/bench_milvus.py --n 20000 --server start --clients 1,8
  .venv/bin/python bench/bench_milvus.py --sizing     # the formula table of docs/milvus.md (no run)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

LABELS = ["rare", "common", "half"]
FREQ = {"rare": 0.01, "common": 0.10, "half": 0.50}


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    out = np.empty((n, dim), np.float32)
    step = 20_000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        c = rng.integers(0, clusters, hi - lo)
        out[lo:hi] = centres[c] + 0.6 * rng.standard_normal((hi - lo, dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def items_table(n: int, seed: int = 1):
    import pandas as pd

    rng = np.random.default_rng(seed)
    labels = np.stack([rng.random(n) < FREQ[name] for name in LABELS], axis=1)
    return pd.DataFrame(
        {
            "id": [f"p{i:07d}" for i in range(n)],
            "sensor": np.where(np.arange(n) % 2 == 0, "s1", "s2"),
            "split": "test",
            "labels": list(labels),
        }
    )


def qps(fn, queries: np.ndarray, clients: int) -> float:
    """Queries per second with ``clients`` threads each sending one query per call."""
    from concurrent.futures import ThreadPoolExecutor

    def work(part: np.ndarray) -> None:
        for x in part:
            fn(x[None])

    parts = np.array_split(np.tile(queries, (max(1, clients // 2), 1)), clients)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(work, parts))
    return sum(len(p) for p in parts) / (time.perf_counter() - t0)


def timed_queries(fn, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    out, lat = [], []
    for q in queries:
        t0 = time.perf_counter()
        out.append(fn(q[None]))
        lat.append((time.perf_counter() - t0) * 1000)
    return np.concatenate(out), lat


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(
        np.mean([len(set(x[x >= 0]) & set(y[y >= 0])) / max(1, (y >= 0).sum()) for x, y in zip(a, b)])
    )


#: scalar columns of a csmae Milvus row (estimate): row 8, id ~16, sensor/split ~12, labels ARRAY
#: ~40, 19 label BOOLs 19, country/season ~20, t 8, bbox 32
MILVUS_SCALARS = 155
#: csmae's items table held by the client (Retriever) for every backend, as numpy columns (estimate):
#: id ~24, sensor/split 2, labels 19, datetime 8, bbox 32, country/season 2
ITEMS_ROW = 87


def sizing(dim: int = 768, m_hnsw: int = 32) -> str:
    """Bytes per vector and RAM / disk at 1M..1B vectors, from formulas (no measurement)."""
    pq = max(1, dim // 8)  # PQ sub-quantizers, 8 bytes per code set at nbits 8 (csmae's ivfpq: 96 at D=768)
    kinds = [  # name, RAM bytes/vector, disk bytes/vector, fixed RAM bytes given n
        ("FAISS Flat (exact)", 4 * dim, 4 * dim, lambda n: 0),
        (f"FAISS HNSW{m_hnsw},Flat", 4 * dim + 8 * m_hnsw, 4 * dim + 8 * m_hnsw, lambda n: 0),
        (f"FAISS HNSW{m_hnsw},SQ8", dim + 8 * m_hnsw, dim + 8 * m_hnsw, lambda n: 0),
        (
            f"FAISS OPQ{pq},IVF,PQ{pq} + fp16 re-rank (mmap)",
            pq + 8,
            pq + 8 + 2 * dim,
            lambda n: 4 * dim * int(min(65536, 4 * n**0.5)) + 4 * dim * pq,
        ),
        ("Milvus FLAT", 4 * dim + MILVUS_SCALARS, 2 * 4 * dim + MILVUS_SCALARS, lambda n: 0),
        (
            f"Milvus HNSW M={m_hnsw}",
            4 * dim + 8 * m_hnsw + MILVUS_SCALARS,
            4 * dim + (4 * dim + 8 * m_hnsw) + MILVUS_SCALARS,
            lambda n: 0,
        ),
        (
            f"Milvus IVF_PQ m={pq}",
            pq + 8 + MILVUS_SCALARS,
            4 * dim + pq + 8 + MILVUS_SCALARS,
            lambda n: 4 * dim * int(min(65536, 4 * n**0.5)),
        ),
        ("csmae items table (client RAM, every backend)", ITEMS_ROW, ITEMS_ROW // 2, lambda n: 0),
    ]
    sizes = [1_000_000, 10_000_000, 100_000_000, 1_000_000_000]

    def gb(b: float) -> str:
        return f"{b / 1e9:,.1f}" if b < 1e12 else f"{b / 1e12:,.2f} TB"

    head = " | ".join(f"{n // 1_000_000:,}M RAM / disk GB" for n in sizes)
    out = [
        f"| kind (D = {dim}, float32) | RAM B/vec | disk B/vec | {head} |",
        "|---|---:|---:|" + "---:|" * len(sizes),
    ]
    for name, ram, disk, fixed in kinds:
        cells = " | ".join(f"{gb(ram * n + fixed(n))} / {gb(disk * n)}" for n in sizes)
        out.append(f"| {name} | {ram:,} | {disk:,} | {cells} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--no-hnsw", action="store_true")
    ap.add_argument("--workdir", default=None, help="where the Lite .db goes (default: a temp dir)")
    ap.add_argument("--sizing", action="store_true", help="print the formula sizing table and exit")
    ap.add_argument("--server", default=None, help="'start' (a local Milvus standalone) or a server URI")
    ap.add_argument("--clients", default="", help="comma-separated client counts for queries/s, e.g. 1,8")
    args = ap.parse_args()
    if args.sizing:
        print(sizing(args.dim))
        return 0

    import faiss

    from csmae.retrieval.backends import milvus as M
    from csmae.retrieval.filters import Filter, FilterColumns

    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    v = clustered(args.n, args.dim)
    items = items_table(args.n)
    rng = np.random.default_rng(7)
    qi = rng.choice(args.n, size=args.queries, replace=False)
    q = v[qi] + 0.05 * rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    print(f"data: {args.n:,} x {args.dim} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    cols = FilterColumns(items, label_names=LABELS)
    filters = {"none": None, **{f"{FREQ[x]:.0%}": Filter(labels_any=[x]) for x in LABELS}}

    flat = faiss.IndexFlatIP(args.dim)
    flat.add(v)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-milvus-"))
    db = work / "bench.db"
    shutil.rmtree(db, ignore_errors=True)
    rows_all = np.arange(args.n, dtype=np.int64)

    t0 = time.perf_counter()
    mflat = M.create(str(db), dim=args.dim, label_names=LABELS, kind="exact", name_hint="flat")
    mflat.add(rows_all, v, items)
    build = {"milvus-lite FLAT": time.perf_counter() - t0}
    print(f"Lite FLAT insert: {build['milvus-lite FLAT']:.1f}s, RSS {rss_gb():.2f} GB", file=sys.stderr)
    mhnsw = fhnsw = None
    if not args.no_hnsw:
        t0 = time.perf_counter()
        mhnsw = M.create(
            str(db), dim=args.dim, label_names=LABELS, kind="hnsw", n_hint=args.n, name_hint="hnsw"
        )
        mhnsw.add(rows_all, v, items)
        mhnsw.search(q[:1], args.k)  # Lite builds the graph lazily: count it in the build
        build["milvus-lite HNSW"] = time.perf_counter() - t0
        mhnsw.tune(v, target=0.95, n_queries=200)
        print(f"Lite HNSW build {build['milvus-lite HNSW']:.1f}s, {mhnsw.search_params}", file=sys.stderr)
        t0 = time.perf_counter()
        fhnsw = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
        fhnsw.hnsw.efConstruction = 200
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        fhnsw.add(v)
        faiss.omp_set_num_threads(1)
        build["faiss HNSW32"] = time.perf_counter() - t0

    engines: dict[str, object] = {"milvus-lite FLAT": mflat}
    if mhnsw is not None:
        engines["milvus-lite HNSW"] = mhnsw
    stack = contextlib.ExitStack()
    if args.server:
        uri = args.server
        if uri == "start":
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.retrieval.milvus_server import milvus_server

            uri = stack.enter_context(milvus_server(work / "server"))
        for kind in ("exact", "hnsw") if not args.no_hnsw else ("exact",):
            t0 = time.perf_counter()
            be = M.create(uri, dim=args.dim, label_names=LABELS, kind=kind, n_hint=args.n, name_hint=kind)
            be.add(rows_all, v, items)
            be.search(q[:1], args.k)
            name = f"milvus-server {'FLAT' if kind == 'exact' else 'HNSW'}"
            build[name] = time.perf_counter() - t0
            if kind == "hnsw":
                be.tune(v, target=0.95, n_queries=200)
            engines[name] = be
            print(f"{name} build {build[name]:.1f}s {be.search_params}", file=sys.stderr)

    rows = []
    for fname, flt in filters.items():
        mask = np.ones(args.n, bool) if flt is None else flt.mask(cols)
        allowed = None if flt is None else np.flatnonzero(mask).astype(np.int64)
        sel = None
        if flt is not None:
            bits = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(args.n, faiss.swig_ptr(bits))
        p = faiss.SearchParameters(sel=sel)
        ref, lat = timed_queries(lambda x, p=p: flat.search(x, args.k, params=p)[1], q)
        rows.append(("faiss Flat (exact)", fname, mask.mean(), 1.0, lat))
        got, lat = timed_queries(lambda x, a=allowed, f=flt: mflat.search(x, args.k, rows=a, where=f)[1], q)
        rows.append(("milvus-lite FLAT", fname, mask.mean(), agreement(got, ref), lat))
        for name, be in engines.items():
            if name == "milvus-lite FLAT":
                continue
            got, lat = timed_queries(
                lambda x, a=allowed, f=flt, b=be: b.search(x, args.k, rows=a, where=f)[1], q
            )
            rows.append((name, fname, mask.mean(), agreement(got, ref), lat))
        if mhnsw is not None and fhnsw is not None:
            ph = faiss.SearchParametersHNSW(sel=sel, efSearch=128)
            got, lat = timed_queries(lambda x, ph=ph: fhnsw.search(x, args.k, params=ph)[1], q)
            rows.append(("faiss HNSW32 ef128 (selector only)", fname, mask.mean(), agreement(got, ref), lat))
        print(f"filter {fname} done", file=sys.stderr)

    print(
        f"\n{args.n:,} x {args.dim} clustered unit vectors, {args.queries} queries, top-{args.k}, one query"
    )
    print("per call, one thread. Agreement = mean share of the FAISS exact top-10 ids returned.\n")
    print("| engine | filter (labels_any) | allowed | top-10 agreement vs FAISS exact | median ms | p95 ms |")
    print("|---|---|---:|---:|---:|---:|")
    for eng, fname, sel_, agr, lat in rows:
        med, p95 = np.median(lat), np.percentile(lat, 95)
        print(f"| {eng} | {fname} | {sel_:.1%} | {agr:.3f} | {med:.2f} | {p95:.2f} |")
    clients = [int(c) for c in args.clients.split(",") if c]
    if clients:
        print("\n| engine | filter | " + " | ".join(f"q/s at {c} client(s)" for c in clients) + " |")
        print("|---|---|" + "---:|" * len(clients))
        cands: dict[str, object] = {"faiss Flat (exact)": None, **engines}
        if fhnsw is not None:
            cands["faiss HNSW32 ef128"] = fhnsw
        for fname in ("none", "10%"):
            flt = filters[fname]
            mask = np.ones(args.n, bool) if flt is None else flt.mask(cols)
            allowed = None if flt is None else np.flatnonzero(mask).astype(np.int64)
            sel = None
            if flt is not None:
                bits = np.packbits(mask, bitorder="little")
                sel = faiss.IDSelectorBitmap(args.n, faiss.swig_ptr(bits))
            for name, be in cands.items():
                if be is None:
                    p = faiss.SearchParameters(sel=sel)
                    fn = lambda x, p=p: flat.search(x, args.k, params=p)  # noqa: E731
                elif be is fhnsw:
                    ph = faiss.SearchParametersHNSW(sel=sel, efSearch=128)
                    fn = lambda x, ph=ph: fhnsw.search(x, args.k, params=ph)  # noqa: E731
                else:
                    fn = lambda x, b=be, a=allowed, f=flt: b.search(x, args.k, rows=a, where=f)  # noqa: E731
                cells = [f"{qps(fn, q, c):.1f}" for c in clients]
                print(f"| {name} | {fname} | " + " | ".join(cells) + " |")
    print("\n| build | seconds |\n|---|---:|")
    for k_, s in build.items():
        print(f"| {k_} | {s:.1f} |")
    if mhnsw is not None:
        print(f"\nMilvus Lite HNSW search params: {mhnsw.search_params} (M=32, efConstruction=200)")
    disk = sum(f.stat().st_size for f in db.rglob("*") if f.is_file()) / 1e9
    print(f"peak RSS {rss_gb():.2f} GB; Lite data dir {disk:.2f} GB")
    for be in engines.values():
        be.drop()  # type: ignore[attr-defined]
    stack.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
