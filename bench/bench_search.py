"""Archive-scale search: filtered exact search, the compressed ivfpq kind, index add vs rebuild.

Synthetic clustered vectors (D=768, L2-normalised), generated chunk by chunk into an on-disk
float32 memmap so the process never holds more than the index under test (peak RSS is printed).
One run prints every table of bench/README.md "## search":

1. filtered exact search (IndexIDMap2(Flat) + IDSelectorBitmap), ms per single query at one thread,
   selectivity 1 / 10 / 50 % vs unfiltered, and the cost of evaluating the Filter on the items table;
2. ivfpq (IVF + 4-bit fast-scan PQ in RAM, exact re-rank from the on-disk float16 copy): build
   time, index RAM, recall@10 after re-rank vs exact, median / p95 single-query latency at one
   thread, unfiltered and filtered; RAM per vector extrapolated to 100M;
3. HNSW32 filtered (optional, --hnsw N: builds one over the first N vectors) at the same
   selectivities, with the exact-subset fallback on and off (where the fallback pays);
4. ``index add`` of --add new vectors into the saved index vs rebuilding it, for exact and ivfpq.

    nice -n 5 python bench/bench_search.py --n 1000000 --work /tmp/bench-search
    nice -n 10 python bench/bench_search.py --n 5000000 --ivfpq-only --work /tmp/bench-search-5m
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB -> GB


def rss_now_gb() -> float:
    """Current resident set size (VmRSS), GB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def clustered(path: Path, n: int, d: int, *, seed: int, centres: np.ndarray, basis: np.ndarray) -> np.memmap:
    """n vectors in clusters of a rank-16 latent space mapped to D dims, plus isotropic noise (the
    bench_retrieval.py generator with cluster centres in the latent space), L2-normalised, written
    chunk by chunk into a float32 memmap."""
    rng = np.random.default_rng(seed)
    step = 100_000
    with open(path, "wb") as f:  # plain writes: a written memmap's dirty pages would count as RSS
        np.lib.format.write_array_header_1_0(
            f,
            {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                "fortran_order": False,
                "shape": (n, d),
            },
        )
        for s in range(0, n, step):
            e = min(n, s + step)
            z = centres[rng.integers(0, len(centres), e - s)] + 0.5 * rng.standard_normal(
                (e - s, basis.shape[0])
            )
            x = (z.astype(np.float32) @ basis) + 1.2 * rng.standard_normal((e - s, d), dtype=np.float32)
            (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32).tofile(f)
    return np.load(path, mmap_mode="r")


class OnDisk:
    """Rows of a .npy float32 matrix read with plain file reads (page cache, not this process's RSS,
    unlike touching a memmap)."""

    def __init__(self, path: Path, n: int, d: int):
        self.path, self.n, self.d = path, n, d
        with open(path, "rb") as f:
            np.lib.format.read_magic(f)
            np.lib.format.read_array_header_1_0(f)
            self.offset = f.tell()

    def __len__(self) -> int:
        return self.n

    def rows(self, lo: int, hi: int) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(self.offset + lo * self.d * 4)
            return np.fromfile(f, dtype=np.float32, count=(hi - lo) * self.d).reshape(hi - lo, self.d)

    def take(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        out = np.empty((len(idx), self.d), np.float32)
        order = np.argsort(idx)
        s = idx[order]
        for lo in range(0, self.n, 100_000):
            sel = (s >= lo) & (s < lo + 100_000)
            if sel.any():
                out[order[sel]] = self.rows(lo, min(self.n, lo + 100_000))[s[sel] - lo]
        return out

    def head(self, m: int) -> OnDisk:
        h = OnDisk.__new__(OnDisk)
        h.path, h.n, h.d, h.offset = self.path, m, self.d, self.offset
        return h


def ground_truth(q: np.ndarray, x: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k row ids by blocked matmul over the memmap (rows = allowed subset)."""
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_r = np.full((len(q), k), -1, np.int64)
    ids = np.arange(len(x)) if rows is None else rows
    for lo in range(0, len(ids), 200_000):
        part = ids[lo : lo + 200_000]
        s = q @ (x.take(part) if rows is not None else x.rows(lo, lo + len(part))).T
        cs = np.concatenate([best_s, s], axis=1)
        cr = np.concatenate([best_r, np.broadcast_to(part, s.shape)], axis=1)
        o = np.argsort(-cs, axis=1)[:, :k]
        best_s, best_r = np.take_along_axis(cs, o, 1), np.take_along_axis(cr, o, 1)
    return best_r


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, want)]))


def latency(backend, q: np.ndarray, k: int, rows: np.ndarray | None) -> tuple[np.ndarray, float, float]:
    """Single-query calls; returns rows (Q, k), median ms, p95 ms."""
    out, times = [], []
    for i in range(len(q)):
        t0 = time.perf_counter()
        _, r = backend.search(q[i : i + 1], k, rows=rows)
        times.append((time.perf_counter() - t0) * 1000)
        out.append(r[0])
    return np.array(out), float(np.median(times)), float(np.percentile(times, 95))


def items_for(n: int, seed: int):
    """Items table with a bucket 'country' column: [A] 1 %, [A, B] 10 %, [A, B, C] 50 %."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    country = rng.choice(np.array(list("ABCD")), n, p=[0.01, 0.09, 0.40, 0.50])
    return pd.DataFrame(
        {
            "id": np.char.add("p", np.arange(n).astype(str)).astype(object),
            "sensor": np.where(np.arange(n) % 2 == 0, "s1", "s2").astype(object),
            "split": np.full(n, "train", dtype=object),
            "labels": list(np.zeros((n, 19), bool)),
            "live": np.ones(n, bool),
            "country": country.astype(object),
        }
    )


SELECTIVITY = {"1 %": ["A"], "10 %": ["A", "B"], "50 %": ["A", "B", "C"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument(
        "--queries", type=int, default=200, help="queries for recall (latency uses --lat-queries)"
    )
    ap.add_argument("--lat-queries", type=int, default=50)
    ap.add_argument("--train", type=int, default=100_000)
    ap.add_argument("--add", type=int, default=10_000)
    ap.add_argument("--hnsw", type=int, default=0, help="also build HNSW32 over this many vectors")
    ap.add_argument("--work", default="/tmp/bench-search")
    ap.add_argument("--skip-exact", action="store_true")
    ap.add_argument("--nprobe", type=int, default=6, help="--measure-ivfpq: nprobe for the filtered table")
    ap.add_argument("--rerank", type=int, default=100, help="--measure-ivfpq: re-rank depth for it")
    ap.add_argument(
        "--measure-ivfpq",
        action="store_true",
        help="re-measure the ivfpq folder a previous run left in --work (no rebuild)",
    )
    ap.add_argument(
        "--ivfpq-only",
        action="store_true",
        help="only the ivfpq kind (for 5M+): build, own tuning, save, reload (RSS delta), held-out recall "
        "and latency; the big files in --work are deleted at the end",
    )
    args = ap.parse_args()
    if args.ivfpq_only:
        ivfpq_scale(args)
        return
    if args.measure_ivfpq:
        measure_ivfpq(args)
        return

    import faiss

    from csmae.labels import LABELS_19
    from csmae.retrieval.backends import faiss as fb
    from csmae.retrieval.embeddings import embeddings_from_arrays
    from csmae.retrieval.filters import Filter, FilterColumns
    from csmae.retrieval.index import KIND, SearchIndex
    from csmae.retrieval.index_grow import add_embeddings

    faiss.omp_set_num_threads(1)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    n, d, k = args.n, args.dim, 10
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, 16))
    basis = rng.standard_normal((16, d), dtype=np.float32)
    t0 = time.perf_counter()
    clustered(work / "x.npy", n, d, seed=1, centres=centres, basis=basis)
    x = OnDisk(work / "x.npy", n, d)
    q = np.asarray(clustered(work / "q.npy", args.queries, d, seed=2, centres=centres, basis=basis))
    new = np.asarray(clustered(work / "new.npy", args.add, d, seed=3, centres=centres, basis=basis))
    tq = np.asarray(clustered(work / "tq.npy", 200, d, seed=5, centres=centres, basis=basis))
    print(
        f"# N={n:,} D={d}: 1000 clusters in a rank-16 latent space + noise, L2-normalised; "
        f"generated in {time.perf_counter() - t0:.0f}s; "
        f"faiss threads 1; {args.queries} held-out queries",
        flush=True,
    )

    items = items_for(n, seed=4)
    t0 = time.perf_counter()
    cols = FilterColumns(items, label_names=LABELS_19)
    t_cols = time.perf_counter() - t0
    allowed, mask_ms = {}, {}
    for name, buckets in SELECTIVITY.items():
        t0 = time.perf_counter()
        m = Filter(country=buckets).mask(cols)
        mask_ms[name] = (time.perf_counter() - t0) * 1000
        allowed[name] = np.flatnonzero(m).astype(np.int64)
    print(
        f"\nFilter evaluation on the {n:,}-row items table: columns prepared once in {t_cols:.1f}s "
        "(at index load); per search: " + ", ".join(f"{s} {ms:.1f} ms" for s, ms in mask_ms.items())
    )
    gt = {None: ground_truth(q, x, k)}
    for name, rows in allowed.items():
        gt[name] = ground_truth(q, x, k, rows)
    lq = q[: args.lat_queries]

    def manifest(kind: str, factory: str, params: dict) -> dict:
        from csmae.retrieval.artifacts import base_manifest

        m = base_manifest(
            KIND,
            model={"name": "bench"},
            dim=d,
            sensors={"s1": {}, "s2": {}},
            index_kind=kind,
            factory=factory,
            count=n,
            rows=n,
            sensor_counts={"s1": n // 2 + n % 2, "s2": n // 2},
            search_params=params,
            label_names=list(LABELS_19),
        )
        m["format_version"] = 2
        return m

    add_emb = embeddings_from_arrays(
        ids=[f"new{i}" for i in range(args.add)],
        sensors=["s2"] * args.add,
        splits=["train"] * args.add,
        labels=np.zeros((args.add, 19), bool),
        vectors=new,
        manifest={"sensors": {"s1": {}, "s2": {}}, "model": {"name": "bench"}},
    )

    # ----------------------------------------------------------------- exact
    if not args.skip_exact:
        print("\n## filtered exact search (IndexIDMap2(Flat) + IDSelectorBitmap), single query, 1 thread\n")
        t0 = time.perf_counter()
        be = fb.FaissBackend.create("exact", dim=d, n_hint=n)
        for s in range(0, n, 100_000):
            e = min(n, s + 100_000)
            be.add(np.arange(s, e), x.rows(s, e))
        t_build = time.perf_counter() - t0
        print("| filter | allowed rows | median ms | p95 ms | recall@10 vs brute force |")
        print("|---|---:|---:|---:|---:|")
        for name in [None, *SELECTIVITY]:
            rows = None if name is None else allowed[name]
            got, med, p95 = latency(be, lq, k, rows)
            print(
                f"| {name or 'none'} | {n if rows is None else len(rows):,} | {med:.1f} | {p95:.1f} | "
                f"{recall(got, gt[name][: len(lq)]):.3f} |",
                flush=True,
            )
        si = SearchIndex(backend=be, items=items, manifest=manifest("exact", "Flat", {}))
        t0 = time.perf_counter()
        si.save(work / "idx-exact")
        t_save = time.perf_counter() - t0
        del si, be
        rep = add_embeddings(work / "idx-exact", add_emb)
        print(
            f"\nexact: build (add {n:,} from the memmap) {t_build:.1f}s + save {t_save:.1f}s = "
            f"rebuild {t_build + t_save:.1f}s; `index add` of {args.add:,}: {rep.seconds:.1f}s "
            f"(load + add + write the new version); peak RSS so far {rss_gb():.2f} GB",
            flush=True,
        )
        shutil.rmtree(work / "idx-exact")

    # ----------------------------------------------------------------- ivfpq
    print("\n## ivfpq (IVF + PQ 4-bit fast-scan codes in RAM, exact re-rank from on-disk float16)\n")
    faiss.omp_set_num_threads(2)  # training and encoding on both cores; searches at one thread
    t0 = time.perf_counter()
    sample = x.take(np.sort(rng.choice(n, size=min(n, args.train), replace=False)))
    (work / "idx-pq").mkdir()
    be = fb.FaissBackend.create("ivfpq", dim=d, n_hint=n, train=sample, store_folder=work / "idx-pq")
    t_train = time.perf_counter() - t0
    del sample
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        be.add(np.arange(s, e), x.rows(s, e))
    t_build = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    rec = be.tune(None, target=0.95, truth=(tq, ground_truth(tq, x, k)))  # own tuning queries
    t_tune = time.perf_counter() - t0
    ram = faiss.serialize_index(be.index).nbytes
    print(
        f"{be.factory}: train {t_train:.0f}s, build (train + encode {n:,}) {t_build:.0f}s, "
        f"tune {t_tune:.0f}s -> {be.params}, rerank {be.rerank} "
        f"(recall {rec:.3f} on 200 separate tuning queries)"
    )
    print(
        f"index RAM {ram / 1e9:.3f} GB ({ram / n:.1f} B/vector incl. centroids), on-disk float16 vectors "
        f"{be.store.nbytes / 1e9:.2f} GB; extrapolated to 100M: {ram / n * 1e8 / 1e9:.1f} GB RAM "
        f"(codes + ids scale linearly; centroids are fixed), {be.store.nbytes / n * 1e8 / 1e9:.0f} GB disk\n"
    )
    print("| filter | recall@10 after re-rank | median ms | p95 ms |")
    print("|---|---:|---:|---:|")
    for name in [None, *SELECTIVITY]:
        rows = None if name is None else allowed[name]
        got, med, p95 = latency(be, q, k, rows)
        print(f"| {name or 'none'} | {recall(got, gt[name]):.3f} | {med:.2f} | {p95:.2f} |", flush=True)
    si = SearchIndex(backend=be, items=items, manifest=manifest("ivfpq", be.factory, be.params))
    t0 = time.perf_counter()
    si.save(work / "idx-pq2")
    t_save = time.perf_counter() - t0
    del si, be
    rep = add_embeddings(work / "idx-pq2", add_emb)
    print(
        f"\nivfpq: rebuild {t_build + t_tune + t_save:.0f}s (build + tune + save); "
        f"`index add` of {args.add:,}: "
        f"{rep.seconds:.1f}s; peak RSS {rss_gb():.2f} GB",
        flush=True,
    )

    # ----------------------------------------------------------------- hnsw
    if args.hnsw:
        m = args.hnsw
        print(f"\n## HNSW32 filtered, first {m:,} vectors, single query, 1 thread\n")
        t0 = time.perf_counter()
        be = fb.FaissBackend.create("hnsw", dim=d, n_hint=m)
        faiss.omp_set_num_threads(2)
        be.add(np.arange(m), x.rows(0, m))
        faiss.omp_set_num_threads(1)
        print(
            f"build {time.perf_counter() - t0:.0f}s (2 threads); fallback thresholds in csmae: exact subset "
            f"when allowed <= {fb.EXACT_MAX_ROWS:,} rows or < {fb.EXACT_BELOW:.0%} of the index"
        )
        be.tune(x.rows(0, m), target=0.95, n_queries=300)
        sub = {nm: r[r < m] for nm, r in allowed.items()}
        sub["0.3 %"] = sub["1 %"][: int(0.003 * m)]
        sub["3 %"] = np.unique(np.concatenate([sub["1 %"], sub["10 %"][: int(0.03 * m)]]))
        gts = {nm: ground_truth(q, x.head(m), k, r) for nm, r in sub.items()}
        gts[None] = ground_truth(q, x.head(m), k)
        print("| filter | allowed | path | recall@10 | median ms | p95 ms |")
        print("|---|---:|---|---:|---:|---:|")
        for nm in [None, "0.3 %", "1 %", "3 %", "10 %", "50 %"]:
            rows = None if nm is None else sub[nm]
            for path, (mx, below) in {"graph + selector": (0, 0.0), "exact subset": (10**12, 1.0)}.items():
                if nm is None and path == "exact subset":
                    continue
                fb.EXACT_MAX_ROWS, fb.EXACT_BELOW = mx, below
                got, med, p95 = latency(be, q, k, rows)
                print(
                    f"| {nm or 'none'} | {m if rows is None else len(rows):,} | {path} | "
                    f"{recall(got, gts[nm]):.3f} | {med:.2f} | {p95:.2f} |",
                    flush=True,
                )
    print(f"\npeak RSS {rss_gb():.2f} GB")


def load_rss(folder: Path, entry: dict, params: dict) -> tuple[float, float]:
    """VmRSS (GB) of a fresh Python process after importing FAISS + csmae, and after loading the backend."""
    import json
    import subprocess

    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / 'src')!r})\n"
        "from pathlib import Path\n"
        "from bench_search import rss_now_gb\n"
        "from csmae.retrieval.backends import faiss as fb\n"
        "fb.faiss_module()\n"
        "r0 = rss_now_gb()\n"
        "a = sys.argv\n"
        "be = fb.FaissBackend.load(Path(a[1]), json.loads(a[2]), params=json.loads(a[3]))\n"
        "print(r0, rss_now_gb())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder), json.dumps(entry), json.dumps(params)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[-2]), float(out[-1])


def ivfpq_scale(args: argparse.Namespace) -> None:
    """The ivfpq kind alone at archive scale, through the backend's create / add / tune / save /
    load; exact ground truth for the held-out and the tuning queries in one chunked scan."""
    import gc

    import faiss

    from csmae.retrieval.backends import faiss as fb

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    n, d, k = args.n, args.dim, 10
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, 16))
    basis = rng.standard_normal((16, d), dtype=np.float32)
    try:
        t0 = time.perf_counter()
        clustered(work / "x.npy", n, d, seed=1, centres=centres, basis=basis)
        x = OnDisk(work / "x.npy", n, d)
        q = np.array(clustered(work / "q.npy", args.queries, d, seed=2, centres=centres, basis=basis))
        tq = np.array(clustered(work / "tq.npy", 200, d, seed=5, centres=centres, basis=basis))
        print(
            f"# N={n:,} D={d}: generated in {time.perf_counter() - t0:.0f}s; peak RSS {rss_gb():.2f} GB",
            flush=True,
        )
        faiss.omp_set_num_threads(2)
        t0 = time.perf_counter()
        both = ground_truth(np.concatenate([q, tq]), x, k)
        gt, tgt = both[: len(q)], both[len(q) :]
        print(
            f"exact ground truth ({len(q)} held-out + 200 tuning queries): {time.perf_counter() - t0:.0f}s",
            flush=True,
        )

        t0 = time.perf_counter()
        sample = x.take(np.sort(rng.choice(n, size=min(n, args.train), replace=False)))
        folder = work / "idx-pq"
        folder.mkdir()
        be = fb.FaissBackend.create("ivfpq", dim=d, n_hint=n, train=sample, store_folder=folder)
        t_train = time.perf_counter() - t0
        del sample
        for s in range(0, n, 100_000):
            e = min(n, s + 100_000)
            be.add(np.arange(s, e), x.rows(s, e))
        t_build = time.perf_counter() - t0
        print(
            f"{be.factory}: train ({args.train:,}) {t_train:.0f}s, build (train + encode) {t_build:.0f}s",
            flush=True,
        )
        faiss.omp_set_num_threads(1)
        t0 = time.perf_counter()
        rec = be.tune(None, target=0.95, truth=(tq, tgt))
        t_tune = time.perf_counter() - t0
        print(
            f"tune {t_tune:.0f}s -> {be.params}, rerank {be.rerank}, recall {rec:.3f} on 200 tuning queries"
        )
        ser = faiss.serialize_index(be.index).nbytes
        entry = be.save(folder)
        params = dict(be.params)
        disk = be.store.nbytes
        del be
        gc.collect()
        r0, r1 = load_rss(folder, entry, params)  # a fresh process: freed heap here would hide it
        be = fb.FaissBackend.load(folder, entry, params=params)
        print(
            f"index RAM: RSS +{r1 - r0:.3f} GB after load ({(r1 - r0) * 1e9 / n:.1f} B/vector), serialized "
            f"{ser / 1e9:.3f} GB ({ser / n:.1f} B/vector); on-disk float16 vectors {disk / 1e9:.2f} GB; "
            f"index file {(folder / 'index.faiss').stat().st_size / 1e9:.3f} GB",
            flush=True,
        )
        got, med, p95 = latency(be, q, k, None)
        print(
            f"held-out ({len(q)} queries, 1 thread): recall@10 after re-rank {recall(got, gt):.3f}, "
            f"median {med:.2f} ms, p95 {p95:.2f} ms",
            flush=True,
        )
        for nprobe in sorted({max(1, params["nprobe"] // 2), params["nprobe"], 2 * params["nprobe"]}):
            be.params["nprobe"] = nprobe
            got, med, p95 = latency(be, q, k, None)
            print(
                f"  nprobe {nprobe} rerank {be.rerank}: recall {recall(got, gt):.3f}, "
                f"median {med:.2f} ms, p95 {p95:.2f} ms"
            )
        print(f"\npeak RSS {rss_gb():.2f} GB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_ivfpq(args: argparse.Namespace) -> None:
    """nprobe x re-rank sweep and filtered searches on the saved ivfpq index of a previous run
    (its ``--add`` rows removed again, in memory), against the same data and queries."""
    import faiss

    from csmae.retrieval.backends import faiss as fb
    from csmae.retrieval.index import SearchIndex

    faiss.omp_set_num_threads(1)
    work, n, d, k = Path(args.work), args.n, args.dim, 10
    x = OnDisk(work / "x.npy", n, d)
    q = np.load(work / "q.npy")
    si = SearchIndex.load(work / "idx-pq2")
    be = si.backend
    be.remove(np.arange(n, be.n_rows))
    print(
        f"# re-measured {be.factory} over {len(be):,} vectors (saved by the run above), faiss threads 1; "
        f"exact fallback for ivfpq at <= {fb.EXACT_MAX_ROWS_DISK:,} allowed rows\n"
    )
    gt = ground_truth(q, x, k)
    print("| nprobe | rerank | recall@10 after re-rank | median ms | p95 ms |")
    print("|---:|---:|---:|---:|---:|")
    for nprobe in (4, 6, 8, 12):
        for rerank in (100, 200):
            be.params["nprobe"], be.rerank = nprobe, rerank
            got, med, p95 = latency(be, q, k, None)
            print(f"| {nprobe} | {rerank} | {recall(got, gt):.3f} | {med:.2f} | {p95:.2f} |", flush=True)
    be.params["nprobe"], be.rerank = args.nprobe, args.rerank
    items = items_for(n, seed=4)
    from csmae.labels import LABELS_19
    from csmae.retrieval.filters import Filter, FilterColumns

    cols = FilterColumns(items, label_names=LABELS_19)
    print(f"\nfiltered, nprobe {args.nprobe} (divided by the allowed share), rerank {args.rerank}:\n")
    print("| filter | allowed | recall@10 after re-rank | median ms | p95 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, buckets in SELECTIVITY.items():
        rows = np.flatnonzero(Filter(country=buckets).mask(cols)).astype(np.int64)
        got, med, p95 = latency(be, q, k, rows)
        print(
            f"| {name} | {len(rows):,} | {recall(got, ground_truth(q, x, k, rows)):.3f} | {med:.2f} | "
            f"{p95:.2f} |",
            flush=True,
        )
    print(f"\npeak RSS {rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
