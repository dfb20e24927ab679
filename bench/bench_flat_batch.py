"""Exact search cost per query by batch size: FAISS IndexFlatIP at its default BLAS threshold and at
csmae's (``csmae.retrieval.backends.faiss.BLAS_THRESHOLD``), and a torch matmul + top-k for scale.

FAISS scans query by query until n_queries * D reaches ``distance_compute_blas_threshold`` (128,000 in
faiss 1.15: 167 queries at D=768), so 2-166 queries per call cost as much per query as one.
One thread, as the service uses; 100,000 x 768 random unit vectors.

Command: .venv/bin/python bench/bench_flat_batch.py [--n 100000] [--batches 1,2,4,8,20,50,200]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
import torch

from csmae.retrieval.backends.faiss import BLAS_THRESHOLD


def best_of(fn, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--batches", default="1,2,4,8,20,50,200")
    args = p.parse_args()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(args.dim)
    index.add(x)
    xt, xb16 = torch.from_numpy(x), torch.from_numpy(x).bfloat16()
    half = faiss.SearchParameters(sel=faiss.IDSelectorRange(args.n // 2, args.n))
    print(f"{args.n:,} x {args.dim}, one thread, best of 3; ms per query")
    default = faiss.cvar.distance_compute_blas_threshold
    print(f"FAISS {faiss.__version__}: default threshold {default:,}, csmae's {BLAS_THRESHOLD:,}")
    print(
        "| queries per call | FAISS flat, default | FAISS flat, csmae | FAISS flat, csmae, half the rows "
        "(sensor filter) | torch fp32 matmul + top-k | torch bf16 matmul + top-k |"
    )
    print("|---:|---:|---:|---:|---:|---:|")

    def faiss_at(threshold: int, fn):
        def run():
            faiss.cvar.distance_compute_blas_threshold = threshold
            return fn()

        return run

    for nq in [int(b) for b in args.batches.split(",")]:
        q = x[rng.choice(args.n, nq, replace=False)]
        qt = torch.from_numpy(q)
        calls = {
            "default": faiss_at(default, lambda q=q: index.search(q, 10)),
            "csmae": faiss_at(BLAS_THRESHOLD, lambda q=q: index.search(q, 10)),
            "half": faiss_at(BLAS_THRESHOLD, lambda q=q: index.search(q, 10, params=half)),
            "fp32": lambda qt=qt: torch.topk(qt @ xt.T, 10),
            "bf16": lambda qt=qt: torch.topk(qt.bfloat16() @ xb16.T, 10),
        }
        ms = [best_of(fn) / nq * 1e3 for fn in calls.values()]
        print(f"| {nq} | " + " | ".join(f"{v:.2f}" for v in ms) + " |")

if __name__ == "__main__":
    main()
