"""Throughput and latency of `csmae serve` search over a 100,000-vector index (D = 768).

The server runs in a child process (uvicorn on 127.0.0.1, a free port) over the real retrieval core
(``csmae.retrieval.build_index`` on random L2-normalised vectors, half S1 half S2, random labels);
this process drives it with N concurrent httpx async clients on loopback, each sending
``GET /api/search?id=..&sensor=..&target=..&k=10`` for random archive items and targets.
Every response must be 200 with k results (zero errors required: the script exits 1 otherwise).

Usage::

    .venv/bin/python bench/bench_serve.py                      # exact index, 50 clients, 15 s per row
    .venv/bin/python bench/bench_serve.py --kind hnsw --seconds 30 --clients 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def build_retriever(n: int, dim: int, kind: str, seed: int):
    from csmae.retrieval import Retriever, build_index
    from csmae.retrieval.embeddings import embeddings_from_arrays

    rng = np.random.default_rng(seed)
    half = n // 2
    ids = [f"P{i:07d}" for i in range(half)] * 2
    sensors = ["s1"] * half + ["s2"] * (n - half)
    labels = rng.random((half, 19)) < 0.15
    emb = embeddings_from_arrays(
        ids=ids, sensors=sensors, splits=(["test"] * n), labels=np.concatenate([labels, labels]),
        vectors=rng.standard_normal((n, dim), dtype=np.float32),
    )
    index = build_index(emb, kind=kind, out=None, recall_queries=200)
    return Retriever(index)


def serve(args: argparse.Namespace) -> None:
    """Child process: build the index, then serve it until killed."""
    import faiss
    import uvicorn

    from csmae.service import ServiceSettings, create_app

    logging.getLogger("csmae.service").setLevel(logging.ERROR)  # "no model for uploads" is expected here
    t0 = time.perf_counter()
    retriever = build_retriever(args.n, args.dim, args.kind, args.seed)  # all cores for the build
    faiss.omp_set_num_threads(args.search_threads)
    app = create_app(retriever, settings=ServiceSettings(thread_safe=args.thread_safe))
    print(json.dumps({"ready": True, "build_s": round(time.perf_counter() - t0, 1)}), flush=True)
    from csmae.cli.serve import KEEP_ALIVE_S

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                timeout_keep_alive=KEEP_ALIVE_S)  # as `csmae serve`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(url: str, *, clients: int, seconds: float, max_requests: int, k: int, seed: int) -> dict:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients)) as c:
        health = (await c.get("/api/health")).json()
        n_pairs = health["counts"]["pairs"]
        model = health["model"]
        tuning = ", ".join(f"{k}={v}" for k, v in (model.get("search_params") or {}).items())
        if model.get("recall_at_10") is not None:
            tuning += f" (recall@10 {model['recall_at_10']:.3f})"
        rng = random.Random(seed)
        latencies: list[float] = []
        errors: list[str] = []
        deadline = time.perf_counter() + seconds
        sent = 0

        async def worker() -> None:
            nonlocal sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                pid = f"P{rng.randrange(n_pairs):07d}"
                sensor, target = rng.choice(["s1", "s2"]), rng.choice(["any", "s1", "s2"])
                params = {"id": pid, "sensor": sensor, "target": target, "k": k}
                t = time.perf_counter()
                try:
                    r = await c.get("/api/search", params=params)
                    ok = r.status_code == 200 and len(r.json()["results"]) == k
                    if not ok:
                        errors.append(f"{r.status_code} {r.text[:120]}")
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000
    return {"requests": len(lat), "errors": len(errors), "first_errors": errors[:3], "rps": len(lat) / wall,
            "tuning": tuning or "-",
            "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "wall": wall}


def run_row(args: argparse.Namespace, thread_safe: bool) -> dict:
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", "--port", str(port), "--n", str(args.n),
           "--dim", str(args.dim), "--kind", args.kind, "--seed", str(args.seed),
           "--search-threads", str(args.search_threads)]
    cmd += ["--thread-safe"] if thread_safe else []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("{"):
            raise RuntimeError(f"server failed to start: {line!r}")
        build_s = json.loads(line)["build_s"]
        url = f"http://127.0.0.1:{port}"
        import httpx

        for _ in range(200):  # wait for uvicorn to listen
            try:
                if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        res = asyncio.run(load(url, clients=args.clients, seconds=args.seconds,
                               max_requests=args.max_requests, k=args.k, seed=args.seed))
        res["build_s"] = build_s
        return res
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="indexed vectors (half S1, half S2)")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--kind", default="exact", help="index kind: exact | hnsw | ivf | FAISS factory")
    p.add_argument("--clients", type=int, default=50, help="concurrent clients")
    p.add_argument("--seconds", type=float, default=15.0, help="duration of each row")
    p.add_argument("--max-requests", type=int, default=20_000, help="upper bound on requests per row")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--search-threads", type=int, default=1, help="FAISS OpenMP threads in the server")
    p.add_argument("--modes", default="lock,threads", help="lock (retriever calls serialised) and/or threads")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--thread-safe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args)
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    print(f"# bench_serve: n={args.n:,} D={args.dim} kind={args.kind} clients={args.clients} k={args.k} "
          f"search_threads={args.search_threads} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}")
    print("| index | search params | retriever calls | requests | errors | req/s | p50 ms | p99 ms "
          "| build s |")
    print("|---|---|---|---|---|---|---|---|---|")
    failed = False
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        res = run_row(args, thread_safe=(mode == "threads"))
        failed |= res["errors"] > 0
        label = "serialised (lock)" if mode == "lock" else "concurrent (thread pool)"
        print(f"| {args.kind} {args.n:,}x{args.dim} | {res['tuning']} | {label} | {res['requests']:,} | "
              f"{res['errors']} | {res['rps']:.1f} | {res['p50']:.1f} | {res['p99']:.1f} | "
              f"{res['build_s']} |", flush=True)
        if res["errors"]:
            print(f"errors: {res['first_errors']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
