"""FAISS, Milvus Lite and a Milvus server on the same vectors and filters (not a test). Markdown tables.

N synthetic clustered unit vectors (default 100,000 x 768: 1,000 Gaussian clusters around random
centres), items carrying three labels of known frequency (1 %, 10 %, 50 %) so that a ``labels_any``
filter has that selectivity. For each filter (none, 1 %, 10 %, 50 %) and engine:

* FAISS: ``IndexFlatIP`` with an ``IDSelectorBitmap`` of the allowed rows (the exact reference),
  and HNSW32 (efConstruction ``--faiss-efc``, default 40 as csmae's ``hnsw`` kind builds it; efSearch
  128, the selector only) beside it;
* Milvus Lite FLAT (``--lite flat``; ``flat,hnsw`` adds HNSW) through csmae's :class:`MilvusBackend`
  (the Filter as a Milvus expression plus the allowed rows, exactly as an index search passes them);
* with ``--server`` (``start``: a Milvus 2.3.5 standalone started here from the dev extra's
  ``milvus`` package, as the tests do; or a URI): server FLAT and HNSW (M=32, efConstruction=200,
  ef tuned to recall@10 >= 0.95, the index built before searching; ``--server-kinds`` picks them),
  each searched at consistency Strong and Bounded (``--consistency``).

Reported: top-10 agreement with the FAISS exact ids (FLAT must be 1.000 = identical ids), median
and p95 single-query latency (one query per call, FAISS and BLAS at one thread), queries/s with
``--clients`` threads (unfiltered and the 10 % filter), build times, peak RSS. Engines run one
after another (each dropped before the next), the vectors memory-mapped from ``--workdir``, so
that 1M x 768 fits beside other work; with ``--lock FILE`` each engine's phase holds that
``flock`` (e.g. /tmp/csmae-bigmem.lock) and releases it between phases.

  OMP_NUM_THREADS=1 .venv/bin/python bench/bench_milvus.py [--n 100000] [--queries 200] [--no-hnsw]
  PYTHONPATH=.:src .venv/bin/python bench/bench_milvus.py --n 1000000 --server start --clients 1,8 \
      --lock /tmp/csmae-bigmem.lock --workdir /tmp/bench-milvus
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


def vectors_file(path: Path, n: int, dim: int) -> np.ndarray:
    """The clustered vectors, written once to ``path`` (.npy) and memory-mapped (reclaimable pages)."""
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        step = 100_000
        for lo in range(0, n, step):
            out[lo : lo + step] = clustered_rows(n, dim, lo, min(n, lo + step))
        out.flush()
        del out
        os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def clustered_rows(n: int, dim: int, lo: int, hi: int, seed: int = 0, clusters: int = 1000) -> np.ndarray:
    """Rows lo..hi of a clustered set drawn chunk by chunk (seeded per chunk of 100,000)."""
    rng = np.random.default_rng([seed, lo])
    centres = np.random.default_rng(seed).standard_normal((clusters, dim), dtype=np.float32)
    c = rng.integers(0, clusters, hi - lo)
    x = centres[c] + 0.6 * rng.standard_normal((hi - lo, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@contextlib.contextmanager
def phase(lock: str | None, name: str):
    """Hold ``flock(lock)`` for one engine's phase (if given); print the load at start and end."""
    f = None
    if lock:
        import fcntl

        f = open(lock, "a")  # noqa: SIM115
        t0 = time.perf_counter()
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        print(f"[{name}] lock after {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(f"[{name}] start {os.popen('uptime').read().strip()}", file=sys.stderr)
    try:
        yield
    finally:
        print(f"[{name}] end {os.popen('uptime').read().strip()}", file=sys.stderr)
        if f is not None:
            f.close()


def add_chunked(be, v: np.ndarray, items, step: int = 50_000) -> None:
    for lo in range(0, len(v), step):
        hi = min(len(v), lo + step)
        be.add(np.arange(lo, hi, dtype=np.int64), np.ascontiguousarray(v[lo:hi]), items.iloc[lo:hi])


def wait_indexed(be, n: int, timeout: float = 4 * 3600) -> tuple[float, float]:
    """Seconds until the server's vector index first covers all ``n`` rows (what csmae's tuning
    waits for: ``MilvusBackend.wait_indexed``), and until nothing is pending (the segments that
    compaction merged after the insert are indexed again; searches run meanwhile)."""
    t0, covered = time.perf_counter(), None
    while time.perf_counter() - t0 < timeout:
        info = be.client.describe_index(be.collection, index_name="vec")
        if covered is None and int(info.get("indexed_rows", 0)) >= n:
            covered = time.perf_counter() - t0
            print(f"index covers all {n:,} rows after {covered:.1f} s", file=sys.stderr, flush=True)
        if covered is not None and int(info.get("pending_index_rows", 0)) == 0:
            break
        time.sleep(5)
    return covered if covered is not None else float("nan"), time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--no-hnsw", action="store_true", help="no HNSW engines")
    ap.add_argument(
        "--faiss-efc",
        type=int,
        default=40,
        help="FAISS HNSW efConstruction (40: FAISS's default, what csmae's own hnsw kind builds)",
    )
    ap.add_argument("--lite", default="flat,hnsw", help="Milvus Lite kinds: flat, hnsw, both, or none")
    ap.add_argument("--workdir", default=None, help="vectors file, Lite .db, server data (default: temp)")
    ap.add_argument("--sizing", action="store_true", help="print the formula sizing table and exit")
    ap.add_argument("--server", default=None, help="'start' (a local Milvus standalone) or a server URI")
    ap.add_argument("--consistency", default="Strong,Bounded", help="server search consistency levels")
    ap.add_argument("--server-kinds", default="flat,hnsw", help="server kinds: flat, hnsw or both")
    ap.add_argument("--clients", default="", help="comma-separated client counts for queries/s, e.g. 1,8")
    ap.add_argument("--lock", default=None, help="flock this file during each engine's phase")
    args = ap.parse_args()
    if args.sizing:
        print(sizing(args.dim))
        return 0

    import faiss

    from csmae.retrieval.backends import milvus as M
    from csmae.retrieval.filters import Filter, FilterColumns

    faiss.omp_set_num_threads(1)
    print(f"start {os.popen('uptime').read().strip()}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-milvus-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    v = vectors_file(work / f"vectors-{args.n}x{args.dim}.npy", args.n, args.dim)
    items = items_table(args.n)
    rng = np.random.default_rng(7)
    qi = rng.choice(args.n, size=args.queries, replace=False)
    q = v[np.sort(qi)] + 0.05 * rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    tune_rows = np.sort(rng.choice(args.n, size=200, replace=False))
    tq = np.ascontiguousarray(v[tune_rows])
    print(f"data: {args.n:,} x {args.dim} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    cols = FilterColumns(items, label_names=LABELS)
    filters = {"none": None, **{f"{FREQ[x]:.0%}": Filter(labels_any=[x]) for x in LABELS}}
    masks = {f: np.ones(args.n, bool) if flt is None else flt.mask(cols) for f, flt in filters.items()}
    allowed = {f: None if filters[f] is None else np.flatnonzero(m).astype(np.int64)
               for f, m in masks.items()}  # fmt: skip
    clients = [int(c) for c in args.clients.split(",") if c]
    rows: list[tuple[str, str, float, float, list[float]]] = []
    rates: list[tuple[str, str, list[str]]] = []
    build: dict[str, float] = {}
    ref: dict[str, np.ndarray] = {}

    def selector(fname: str):
        if filters[fname] is None:
            return None
        bits = np.packbits(masks[fname], bitorder="little")
        sel = faiss.IDSelectorBitmap(args.n, faiss.swig_ptr(bits))
        sel.bits_ref = bits  # keep the bitmap alive with the selector
        return sel

    def measure(name: str, search) -> None:
        """Latency and agreement on every filter, queries/s at each client count (none, 10 %)."""
        for fname in filters:
            got, lat = timed_queries(lambda x, f=fname: search(x, f), q)
            rows.append((name, fname, masks[fname].mean(), 1.0 if name.startswith("faiss Flat")
                         else agreement(got, ref[fname]), lat))  # fmt: skip
            eng, _, sel_, agr, _ = rows[-1]  # as it comes too: a run stopped later keeps what it measured
            print(f"| {eng} | {fname} | {sel_:.1%} | {agr:.3f} | {np.median(lat):.2f} | "
                  f"{np.percentile(lat, 95):.2f} |", file=sys.stderr, flush=True)  # fmt: skip
        for fname in ("none", "10%") if clients else ():
            cells = [f"{qps(lambda x, f=fname: search(x, f), q, c):.1f}" for c in clients]
            rates.append((name, fname, cells))
            print(f"| {name} | {fname} | " + " | ".join(cells) + " |", file=sys.stderr, flush=True)
        print(f"{name} measured", file=sys.stderr)

    with phase(args.lock, "faiss"):
        flat = faiss.IndexFlatIP(args.dim)
        for lo in range(0, args.n, 100_000):
            flat.add(np.ascontiguousarray(v[lo : lo + 100_000]))
        sels = {f: selector(f) for f in filters}
        for fname in filters:
            p = faiss.SearchParameters(sel=sels[fname])
            ref[fname] = np.concatenate([flat.search(x[None], args.k, params=p)[1] for x in q])
        truth = flat.search(tq, 10)[1]
        measure("faiss Flat (exact)", lambda x, f: flat.search(x, args.k, params=faiss.SearchParameters(
            sel=sels[f]))[1])  # fmt: skip
        flat.reset()  # frees its vectors
        if not args.no_hnsw:
            t0 = time.perf_counter()
            fh = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
            fh.hnsw.efConstruction = args.faiss_efc
            faiss.omp_set_num_threads(os.cpu_count() or 1)
            for lo in range(0, args.n, 100_000):
                fh.add(np.ascontiguousarray(v[lo : lo + 100_000]))
            faiss.omp_set_num_threads(1)
            build[f"faiss HNSW32 (efConstruction {args.faiss_efc}, all cores)"] = time.perf_counter() - t0
            print(f"build faiss HNSW32: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            measure("faiss HNSW32 ef128 (selector only)", lambda x, f: fh.search(
                x, args.k, params=faiss.SearchParametersHNSW(sel=sels[f], efSearch=128))[1])  # fmt: skip
            fh.reset()

    def note_build(what: str, seconds: float) -> None:
        build[what] = seconds
        print(f"build {what}: {seconds:.1f} s", file=sys.stderr, flush=True)

    def milvus_engine(uri: str, kind: str, name: str, levels: list[str | None]) -> None:
        t0 = time.perf_counter()
        be = M.create(uri, dim=args.dim, label_names=LABELS, kind=kind, n_hint=args.n, name_hint=kind)
        try:
            add_chunked(be, v, items)
            note_build(f"{name}: insert + flush", time.perf_counter() - t0)
            if not M.is_lite_uri(uri):
                covered, settled = wait_indexed(be, args.n)
                note_build(f"{name}: index covers every row, after the insert", covered)
                note_build(f"{name}: nothing pending (compacted segments re-indexed)", settled)
            t1 = time.perf_counter()
            be.search(q[:1], args.k)  # Lite builds its index lazily: counted here
            note_build(f"{name}: first search", time.perf_counter() - t1)
            if be.approximate:
                recall = be.tune(None, target=0.95, truth=(tq, truth))
                print(f"{name} tuned {be.search_params} recall@10 {recall}", file=sys.stderr)
            for level in levels:
                be.consistency = level
                label = f"{name} ({level})" if level else name
                measure(label, lambda x, f: be.search(x, args.k, rows=allowed[f], where=filters[f])[1])
        finally:
            be.drop()

    kinds = [k for k in ("exact", "hnsw") if k == "exact" or not args.no_hnsw]
    lite = [k.strip() for k in args.lite.split(",") if k.strip() and k.strip() != "none"]
    for kind in kinds:
        if ("flat" if kind == "exact" else kind) in lite:
            with phase(args.lock, f"lite {kind}"):
                db = work / f"lite-{kind}.db"
                shutil.rmtree(db, ignore_errors=True)
                milvus_engine(str(db), kind, f"milvus-lite {'FLAT' if kind == 'exact' else 'HNSW'}", [None])
                shutil.rmtree(db, ignore_errors=True)
    if args.server:
        levels: list[str | None] = [c.strip() for c in args.consistency.split(",") if c.strip()]
        on_server = [k.strip() for k in args.server_kinds.split(",")]
        for kind in [k for k in kinds if ("flat" if k == "exact" else k) in on_server]:
            with phase(args.lock, f"server {kind}"), contextlib.ExitStack() as stack:
                uri = args.server
                if uri == "start":
                    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
                    from tests.retrieval.milvus_server import milvus_server

                    shutil.rmtree(work / "server", ignore_errors=True)
                    uri = stack.enter_context(milvus_server(work / "server"))
                milvus_engine(uri, kind, f"milvus-server {'FLAT' if kind == 'exact' else 'HNSW'}", levels)

    print(f"\n{args.n:,} x {args.dim} clustered unit vectors, {args.queries} queries, top-{args.k}, one "
          "query per call, one thread. Agreement = mean share of the FAISS exact top-10 ids returned.\n")
    print("| engine | filter (labels_any) | allowed | top-10 agreement vs FAISS exact | median ms | p95 ms |")
    print("|---|---|---:|---:|---:|---:|")
    for eng, fname, sel_, agr, lat in rows:
        med, p95 = np.median(lat), np.percentile(lat, 95)
        print(f"| {eng} | {fname} | {sel_:.1%} | {agr:.3f} | {med:.2f} | {p95:.2f} |")
    if clients:
        print("\n| engine | filter | " + " | ".join(f"q/s at {c} client(s)" for c in clients) + " |")
        print("|---|---|" + "---:|" * len(clients))
        for name, fname, cells in rates:
            print(f"| {name} | {fname} | " + " | ".join(cells) + " |")
    print("\n| build | seconds |\n|---|---:|")
    for k_, s_ in build.items():
        print(f"| {k_} | {s_:.1f} |")
    print(f"\npeak RSS of this process {rss_gb():.2f} GB (the server is another process)")
    print(f"end {os.popen('uptime').read().strip()}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
