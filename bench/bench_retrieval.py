"""Retrieval benchmarks (not a test). Prints Markdown tables.

eval: the full evaluation protocol (S1->S1, S2->S2, S1->S2, S2->S1, S1->mixed, S2->mixed; all
      metrics; k = 5, 10, 20, 100) at BigEarthNet test scale: 123,723 val queries and 125,866 test
      archive items per sensor, D = 768, random vectors and labels. --scale shrinks both counts
      (the search cost is quadratic: time(1.0) ~ time(s) / s**2, an extrapolation, said so);
      --query-fraction f keeps the full archive and takes f of the queries (linear in f);
      --selection groups,topk runs both candidate passes one after the other on the same data. The
      matmul rate of one 1024 x D x archive block in the candidate precision is measured before each
      run (the floor). --precision auto (default) is what `csmae evaluate` uses: bf16 where this CPU
      runs bf16 matmuls natively, fp32 elsewhere. --vectors structured draws the vectors near a
      random rank-16 subspace (as `ann` does) instead of isotropic: closer to learned descriptors,
      and harder for the candidate pass (more items near the k-th score). --verify N checks N
      random queries per direction against a float64 full stable sort (the ranking's definition).
ann:  approximate search over N vectors (default 1,000,000, D = 768) drawn near a random rank-16
      subspace (learned descriptors have a low intrinsic dimension; random unit vectors in 768-D
      have no neighbourhood structure and every ANN index degrades to a scan on them): build time,
      memory, median single-query latency and recall@10 against exact search, per index kind;
      plus exact (IndexFlatIP) latency for comparison. One faiss thread by default (--threads).
embed: end-to-end embedding throughput (prepared-store reading + normalisation + model, both
      sensors) of `csmae embed`'s code path on a synthetic store, bf16 autocast and fp32.

  .venv/bin/python bench/bench_retrieval.py eval [--scale 1.0] [--precision bf16]
  .venv/bin/python bench/bench_retrieval.py eval --query-fraction 0.1 --selection topk,groups
  .venv/bin/python bench/bench_retrieval.py ann [--n 1000000] [--kinds hnsw,ivf]
  .venv/bin/python bench/bench_retrieval.py embed [--model csmae_sesd_base] [--n 512]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

N_VAL, N_TEST, DIM = 123_723, 125_866, 768


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def random_embeddings(n_val: int, n_test: int, dim: int, seed: int = 0, vectors: str = "random"):
    from csmae.retrieval.embeddings import embeddings_from_arrays

    rng = np.random.default_rng(seed)
    n = n_val + n_test
    if vectors == "structured":
        vec, _ = synthetic(2 * n, dim, seed=seed)
    else:
        vec = rng.standard_normal((2 * n, dim), dtype=np.float32)
    lab = rng.random((n, 19)) < 0.15  # ~2.9 labels per patch, like BigEarthNet
    ids = np.repeat(np.array([f"p{i}" for i in range(n)], dtype=object), 2)
    splits = np.repeat(np.array(["val"] * n_val + ["test"] * n_test, dtype=object), 2)
    return embeddings_from_arrays(
        ids=ids,
        sensors=["s1", "s2"] * n,
        splits=splits,
        labels=np.repeat(lab, 2, axis=0),
        vectors=vec,
        manifest={"sensors": {"s1": {}, "s2": {}}},
    )


def matmul_floor_s(n_q: int, n_a: int, dim: int, precision: str, blas: str = "torch") -> tuple[float, float]:
    """(GFLOP/s of one 1024 x dim x n_a block product in the candidate precision by ``blas`` (torch's
    or numpy's), measured here; seconds for n_q x n_a at that rate)."""
    import torch

    dt = torch.bfloat16 if precision == "bf16" else torch.float32
    q = torch.randn(1024, dim).to(dt)
    a = torch.randn(n_a, dim).to(dt)
    out = torch.empty(1024, n_a, dtype=dt)
    if blas == "numpy":
        qn, at, on = q.numpy(), a.numpy().T, out.numpy()

        def product() -> None:
            np.matmul(qn, at, out=on)
    else:

        def product() -> None:
            torch.matmul(q, a.T, out=out)

    product()
    t = time.perf_counter()
    for _ in range(2):
        product()
    rate = 2 * 2 * 1024 * dim * n_a / (time.perf_counter() - t)
    return rate / 1e9, 2 * n_q * n_a * dim / rate


def verify_against_float64(emb, res, n: int, seed: int = 0) -> str:
    """Check ``n`` random queries per searched direction of ``res`` (``run_protocol(emb)``, val
    queries, test archive) against a float64 full stable sort of ``emb``'s own vectors (the result's
    ``queries`` / ``archives`` hold no vectors)."""
    from csmae.retrieval.topk import l2_normalize

    rng = np.random.default_rng(seed)
    checked = worst = 0
    for name, (scores, idx) in res.rankings.items():
        qs, a_s = name.split("->")
        if a_s == "mixed":
            continue
        q = l2_normalize(emb.vectors[emb.mask(sensor=qs, split="val")])
        a = l2_normalize(emb.vectors[emb.mask(sensor=a_s, split="test")]).astype(np.float64)
        if q.shape[1] == 0 or len(q) != len(scores) or len(a) != len(res.archives[a_s]):
            raise AssertionError(f"{name}: the vectors to verify against do not match the result")
        rows = rng.choice(len(q), size=min(n, len(q)), replace=False)
        full = q[rows].astype(np.float64) @ a.T  # (n, N) float64
        for j, r in enumerate(rows):
            want = np.argsort(-full[j], kind="stable")[: idx.shape[1]]
            if not np.array_equal(idx[r], want):
                # a float64 near-tie summed in another order is the only admissible difference
                gap = float(np.abs(full[j, idx[r]] - full[j, want]).max())
                if gap > 1e-12:
                    raise AssertionError(f"{name}: query {r} differs from the float64 sort (gap {gap:.3g})")
                worst += 1
            if not np.allclose(scores[r], full[j, idx[r]], rtol=0, atol=1e-12):
                raise AssertionError(f"{name}: query {r}: scores differ from float64 beyond 1e-12")
            checked += 1
    return f"verified {checked} queries against a float64 full stable sort: all identical" + (
        f" ({worst} differ only by float64 near-ties < 1e-12)" if worst else ""
    )


def bench_eval(args: argparse.Namespace) -> None:
    import torch

    from csmae.retrieval import topk
    from csmae.retrieval.protocol import run_protocol

    n_val, n_test = int(N_VAL * args.scale * args.query_fraction), int(N_TEST * args.scale)
    t0 = time.perf_counter()
    emb = random_embeddings(n_val, n_test, args.dim, vectors=args.vectors)
    t_gen = time.perf_counter() - t0
    ks = [int(k) for k in args.ks.split(",")]
    totals: dict[str, list[float]] = {}
    precision = topk.resolve_precision(args.precision)
    impls = ["this"]
    if args.baseline:
        impls = [x for _ in range(args.rounds) for x in (args.baseline, "this")]
    runs = [(sel, blas, impl) for impl in impls for sel in args.selection.split(",")
            for blas in args.blas.split(",")]  # fmt: skip
    for sel, blas, impl in runs:
        use_exact_topk(impl)
        topk.CANDIDATE_SELECTION = sel
        topk.CANDIDATE_BLAS = blas
        used_blas = topk.candidate_blas(precision)
        gflops, floor = matmul_floor_s(n_val, n_test, args.dim, precision, used_blas)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = run_protocol(emb, ks=ks, precision=precision, block_size=args.block_size)
        total = time.perf_counter() - t0
        totals.setdefault(f"{impl}/{sel}/{used_blas}", []).append(total)
        print(
            f"\n{'exact_topk of ' + impl if impl != 'this' else 'this checkout'}: "
            f"selection {sel!r}, candidate matmul by {used_blas} ({blas}): {n_val:,} queries x "
            f"{n_test:,} archive per sensor, D={args.dim}, "
            f"{args.vectors} vectors, ks={ks}, candidate pass {precision} ({args.precision}), "
            f"torch threads {torch.get_num_threads()}, "
            f"data generation {t_gen:.1f}s (not counted), peak RSS {rss_gb():.1f} GB, load {load:.1f} -> "
            f"{os.getloadavg()[0]:.1f}; matmul measured just before: {gflops:.0f} GFLOP/s, "
            f"floor {floor:.1f} s per direction\n"
        )
        print("| direction | search s | matmul s | top-k s | rescore s | candidates/query | metrics s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, t in res.timing.items():
            if "search_s" in t:
                print(
                    f"| {name} | {t['search_s']:.1f} | {t['matmul_s']:.1f} | {t['topk_s']:.1f} | "
                    f"{t['rescore_s']:.1f} | {t['candidates_per_query']:.0f} | {t['metrics_s']:.1f} |"
                )
            else:
                print(f"| {name} (merge) | - | - | - | - | - | {t['merge_and_metrics_s']:.1f} |")
        print(f"| **total** | **{total:.1f}** | | | | | |")
        n_dir = sum("search_s" in t for t in res.timing.values())
        stage = {f: sum(t.get(f, 0.0) for t in res.timing.values())
                 for f in ("matmul_s", "topk_s", "rescore_s")}
        rest = total - sum(stage.values())
        inside = sum(t.get("search_s", 0.0) + t.get("metrics_s", 0.0) + t.get("merge_and_metrics_s", 0.0)
                     for t in res.timing.values())
        print(f"\noutside the searches, metrics and merges (selecting and L2-normalising the vectors, mostly "
              f"the archive's: not linear in the queries): {total - inside:.1f} s")
        tflop = 2 * n_val * n_test * args.dim / 1e12
        mm_rate = n_dir * tflop * 1e3 / max(stage["matmul_s"], 1e-9)
        print(
            f"\nper stage, all directions: matmul {stage['matmul_s']:.1f} s "
            f"({100 * stage['matmul_s'] / total:.0f} %, {n_dir} x {tflop:.3f} TFLOP at {mm_rate:.0f} "
            f"GFLOP/s), top-k {stage['topk_s']:.1f} s, rescore {stage['rescore_s']:.1f} s, metrics + "
            f"merges {rest:.1f} s; the floor {n_dir} x {floor:.1f} s = {n_dir * floor:.1f} s at the "
            f"measured {gflops:.0f} GFLOP/s: total = {total / max(n_dir * floor, 1e-9):.2f}x the floor"
        )
        if args.verify:
            t0 = time.perf_counter()
            print(verify_against_float64(emb, res, args.verify) + f" ({time.perf_counter() - t0:.0f} s)")
        if args.scale != 1.0:
            quad = sum(t.get("matmul_s", 0) + t.get("topk_s", 0) for t in res.timing.values())
            lin = total - quad  # rescoring (~constant candidates per query), metrics, merges
            est = quad / args.scale**2 + lin / args.scale
            print(
                f"\nExtrapolated to full scale (an estimate, not a measurement): matmul + top-k "
                f"{quad:.0f}s x {1 / args.scale**2:.0f} (quadratic) + the rest {lin:.0f}s x "
                f"{1 / args.scale:.0f} (linear in queries) = ~{est / 60:.1f} min"
            )
        if args.query_fraction != 1.0:
            print(
                f"\nFull archive, {args.query_fraction:g} of the queries: every stage is linear in the "
                f"queries, so full scale is ~{total / args.query_fraction / 60:.1f} min (extrapolated); "
                f"the matmul floor {n_dir} x {floor / args.query_fraction:.0f} s = "
                f"{n_dir * floor / args.query_fraction / 60:.1f} min"
            )
    if len(runs) > 1:
        each = [f"{k}: " + " / ".join(f"{v:.1f}" for v in vs) + " s" for k, vs in totals.items()]
        print("\n" + ", ".join(each) + " (same data, same process, in the order run)")


def use_exact_topk(impl: str) -> None:
    """Search with this checkout's :func:`exact_topk` (``"this"``) or with the one of git revision
    ``impl`` (its whole ``topk.py``, loaded as a module of its own), for side-by-side runs."""
    import importlib.util
    import subprocess
    import tempfile

    from csmae.retrieval import eval_stream, topk

    if impl == "this":
        eval_stream.exact_topk = topk.exact_topk
        return
    src = subprocess.run(
        ["git", "show", f"{impl}:src/csmae/retrieval/topk.py"],
        check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / f"topk_{impl}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"topk_{impl}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    eval_stream.exact_topk = mod.exact_topk


def synthetic(n: int, dim: int, seed: int, basis: np.ndarray | None = None, rank: int = 16):
    """Unit vectors near a random rank-``rank`` subspace (intrinsic dimension ~16, like learned
    descriptors; noise norm ~0.3 of the signal). Random unit vectors in 768-D would have no
    neighbourhood structure at all (every ANN index degrades to a scan on them)."""
    rng = np.random.default_rng(seed)
    if basis is None:
        basis = rng.standard_normal((rank, dim), dtype=np.float32)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for s in range(0, n, step):
        e = min(n, s + step)
        z = rng.standard_normal((e - s, basis.shape[0]), dtype=np.float32)
        x = z @ basis + 1.2 * rng.standard_normal((e - s, dim), dtype=np.float32)
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, basis


def bench_ann(args: argparse.Namespace) -> None:
    import faiss

    from csmae.retrieval.backends.faiss import factory_string, set_search_param
    from csmae.retrieval.backends.faiss_tune import recall_at_k
    from csmae.retrieval.topk import exact_topk

    n, d = args.n, args.dim
    t0 = time.perf_counter()
    faiss.omp_set_num_threads(args.threads)
    x, basis = synthetic(n, d, seed=0)
    q, _ = synthetic(args.queries, d, seed=1, basis=basis)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, gt = exact_topk(q, x, 10, precision="fp32", block_size=256)
    t_gt = time.perf_counter() - t0
    print(
        f"\nN={n:,} D={d} synthetic vectors (rank-16 subspace + noise), {args.queries} held-out "
        f"queries; generation "
        f"{t_gen:.0f}s, exact ground truth (blocked matmul, all queries) {t_gt:.1f}s; faiss threads: "
        f"{args.build_threads} to build, {args.threads} to search (single-query latency)\n"
    )
    print("| index | factory | build s | memory GB | param | recall@10 | median latency ms | p95 ms |")
    print("|---|---|---:|---:|---|---:|---:|---:|")
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    lat = single_query_latency(flat, q[: min(50, len(q))], {})
    print(
        f"| exact | Flat | 0 | {x.nbytes / 1e9:.2f} | - | 1.000 | {np.median(lat):.2f} | "
        f"{np.percentile(lat, 95):.2f} |"
    )
    del flat
    kinds = [k for k in args.kinds.split(",") if k] + args.factory
    for kind in kinds:
        factory = factory_string(kind, n)
        t0 = time.perf_counter()
        faiss.omp_set_num_threads(args.build_threads)
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            rng = np.random.default_rng(0)
            index.train(x[rng.choice(n, size=min(n, args.train_size), replace=False)])
        index.add(x)
        build = time.perf_counter() - t0
        faiss.omp_set_num_threads(args.threads)
        mem = index_bytes(index) / 1e9
        name = "efSearch" if "HNSW" in factory.split(",")[0] and "IVF" not in factory else "nprobe"
        for v in [int(p) for p in (args.ef if name == "efSearch" else args.nprobe).split(",")]:
            set_search_param(index, name, v)
            _, ai = index.search(q, 10)
            rec = float(np.mean([len(set(a) & set(g)) / 10 for a, g in zip(ai, gt)]))
            lat = single_query_latency(index, q, {})
            print(
                f"| {kind} | {factory} | {build:.0f} | {mem:.2f} | {name}={v} | {rec:.3f} | "
                f"{np.median(lat):.3f} | {np.percentile(lat, 95):.3f} |"
            )
            sys.stdout.flush()
        _ = recall_at_k  # the index builder's own tuning uses this on archive samples
        del index


def bench_embed(args: argparse.Namespace) -> None:
    import tempfile

    import torch

    import csmae
    from csmae.data import open_dataset
    from csmae.data.synth import write_synthetic
    from csmae.retrieval.embed import embed_dataset

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.data:
            paths = [str(args.data)]
        else:
            paths = write_synthetic(f"{tmp}/store", n=args.n, seed=0, format="store", s2_bands=None)
        t_synth = time.perf_counter() - t0
        model = csmae.create_model(args.model)
        model.save_pretrained(f"{tmp}/model")
        ds = open_dataset(*paths)
        n = len(ds)
        t0 = time.perf_counter()
        for b in range(0, len(ds), args.batch_size):
            ds.get_batch(np.arange(b, min(len(ds), b + args.batch_size)))
        t_read = time.perf_counter() - t0
        print(
            f"\n{args.model} (D={model.embed_dim}), {n} synthetic pairs in a prepared store "
            f"(written in {t_synth:.0f}s), batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
            f"{args.workers} reader worker(s), device "
            f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}\n"
        )
        print(
            "| precision | pairs/s end to end (read + normalise + model, both sensors) | read only pairs/s |"
        )
        print("|---|---:|---:|")
        for precision in args.precisions.split(","):
            marks: list[tuple[float, int]] = []
            embed_dataset(
                f"{tmp}/model",
                paths,
                f"{tmp}/emb-{precision}",
                batch_size=args.batch_size,
                precision=precision,
                workers=args.workers,
                on_progress=lambda d, _n, m=marks: m.append((time.perf_counter(), d)),
            )
            # exclude start-up (model load, first batch warm-up): time from the first batch on
            (t_a, d_a), (t_b, d_b) = marks[1], marks[-1]
            print(f"| {precision} | {(d_b - d_a) / (t_b - t_a):.1f} | {n / t_read:.0f} |")


def single_query_latency(index, q: np.ndarray, _params: dict) -> np.ndarray:
    out = []
    for i in range(len(q)):
        t = time.perf_counter()
        index.search(q[i : i + 1], 10)
        out.append((time.perf_counter() - t) * 1e3)
    return np.array(out)


def index_bytes(index) -> int:
    import faiss

    w = faiss.VectorIOWriter()
    faiss.write_index(index, w)
    return w.data.size()


def bench_resume(args: argparse.Namespace) -> None:
    """What `csmae evaluate`'s resume folder costs at full scale: digests, one save, one load."""
    import tempfile

    from csmae.retrieval.resume import SearchCache, array_digest, search_key

    rng = np.random.default_rng(0)
    q = rng.standard_normal((N_VAL, args.dim), dtype=np.float32)
    a = rng.standard_normal((N_TEST, args.dim), dtype=np.float32)
    t0 = time.perf_counter()
    dq, da = array_digest(q), array_digest(a)
    t_digest = time.perf_counter() - t0
    scores, rows = rng.standard_normal((N_VAL, 100)), rng.integers(0, N_TEST, (N_VAL, 100))
    with tempfile.TemporaryDirectory() as d:
        cache, key = SearchCache(d), search_key(dq, da, 100, None)
        t0 = time.perf_counter()
        cache.save("s1->s2", key, scores, rows)
        t_save = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(d).iterdir())
        t0 = time.perf_counter()
        got = cache.load("s1->s2", key)
        t_load = time.perf_counter() - t0
    assert got is not None and np.array_equal(got[1], rows) and np.array_equal(got[0], scores)
    print(
        f"digest of one query ({q.nbytes / 1e6:.0f} MB) + one archive array ({a.nbytes / 1e6:.0f} MB): "
        f"{t_digest:.2f} s; one direction's top-100: save {t_save:.2f} s ({size / 1e6:.0f} MB), "
        f"load {t_load:.2f} s"
    )


def bench_load(args: argparse.Namespace) -> None:
    """Write and read back an embeddings folder of the full val + test size (both sensors)."""
    import json
    import shutil
    import tempfile

    from csmae.retrieval.artifacts import base_manifest
    from csmae.retrieval.embeddings import KIND, load_embeddings, write_shard

    n_pairs, d, per = N_VAL + N_TEST, args.dim, 4096
    rng = np.random.default_rng(0)
    out = Path(tempfile.mkdtemp())
    try:
        t0, shards = time.perf_counter(), []
        for i, s in enumerate(range(0, n_pairs, per)):
            e = min(n_pairs, s + per)
            m = e - s
            write_shard(
                out / f"part-{i:05d}.parquet",
                ids=[f"p{j}" for j in range(s, e) for _ in range(2)],
                sensors=["s1", "s2"] * m,
                splits=["val" if j < N_VAL else "test" for j in range(s, e) for _ in range(2)],
                labels=rng.random((2 * m, 19)) < 0.15,
                vectors=rng.standard_normal((2 * m, d), dtype=np.float32),
            )
            shards.append({"file": f"part-{i:05d}.parquet", "rows": 2 * m})
        manifest = base_manifest(KIND, dim=d, count=2 * n_pairs, shards=shards, sensors={"s1": {}, "s2": {}})
        (out / "manifest.json").write_text(json.dumps(manifest))
        t_write = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in out.iterdir())
        for _ in range(2):
            t0 = time.perf_counter()
            emb = load_embeddings(out)
            print(
                f"{len(emb):,} rows x {d}: write {t_write:.1f} s ({size / 1e9:.2f} GB, "
                f"{len(shards)} shards), load {time.perf_counter() - t0:.1f} s"
            )
    finally:
        shutil.rmtree(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--scale", type=float, default=1.0)
    e.add_argument("--dim", type=int, default=DIM)
    e.add_argument("--ks", default="5,10,20,100")
    e.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    e.add_argument("--vectors", default="random", choices=["random", "structured"])
    e.add_argument("--blas", default="auto", help="candidate matmul BLAS(es), run one after the other: "
                   "auto, torch, numpy (fp32 only)")
    e.add_argument("--verify", type=int, default=0, metavar="N", help="check N queries per direction")
    e.add_argument("--block-size", type=int, default=1024)
    e.add_argument(
        "--query-fraction",
        type=float,
        default=1.0,
        help="this fraction of the queries against the full archive (linear extrapolation)",
    )
    e.add_argument("--baseline", metavar="REV", help="also run the exact_topk of git revision REV "
                   "(its topk.py), alternating with this checkout's, on the same data")
    e.add_argument("--rounds", type=int, default=1, help="alternating rounds with --baseline")
    e.add_argument(
        "--selection",
        default="groups",
        help="candidate selection(s) of exact_topk, run one after the other: groups, topk",
    )
    a = sub.add_parser("ann")
    a.add_argument("--n", type=int, default=1_000_000)
    a.add_argument("--dim", type=int, default=DIM)
    a.add_argument("--queries", type=int, default=1000)
    a.add_argument("--kinds", default="hnsw,ivf", help="csmae kind names, comma-separated ('' for none)")
    a.add_argument(
        "--factory",
        action="append",
        default=[],
        help="a FAISS factory string to measure as well, e.g. 'HNSW32,SQ8' (repeatable)",
    )
    a.add_argument("--ef", default="16,24,32,64,128")
    a.add_argument("--nprobe", default="16,32,64")
    a.add_argument("--train-size", type=int, default=100_000)
    a.add_argument("--threads", type=int, default=1, help="faiss threads for search (latency)")
    a.add_argument(
        "--build-threads", type=int, default=os.cpu_count() or 1, help="faiss threads for building"
    )
    ld = sub.add_parser("load")
    ld.add_argument("--dim", type=int, default=DIM)
    r = sub.add_parser("resume")
    r.add_argument("--dim", type=int, default=DIM)
    m = sub.add_parser("embed")
    m.add_argument("--model", default="csmae_sesd_base")
    m.add_argument("--n", type=int, default=512)
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--precisions", default="bf16,fp32")
    m.add_argument("--workers", type=int, default=0, help="DataLoader reader processes")
    m.add_argument("--data", help="an existing prepared store (default: write --n synthetic pairs)")
    args = p.parse_args()
    print(f"host: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    {"eval": bench_eval, "ann": bench_ann, "embed": bench_embed, "resume": bench_resume, "load": bench_load}[
        args.mode
    ](args)


if __name__ == "__main__":
    main()
