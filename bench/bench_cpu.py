"""This CPU's fp32 matmul by BLAS, and OpenMP's wait policy under load (issue 22, AVX2-only CPUs).

blas:   one B x D by D x N fp32 product (default 1024 x 768 x 16384, the shape of the exact
        evaluation's candidate matmul) by torch (its BLAS: MKL in the x86 wheels) and by numpy (its
        BLAS: OpenBLAS in the wheels), alternating rounds in one process; GFLOP/s wall and per
        CPU-second x threads. Run it with 1 and 2 threads (the thread count of both BLAS is set from
        --threads before they load).
openmp: one training step of the demo's CSMAE (batch 64, fp32) in fresh processes, alternating
        the OpenMP wait policies (default, OMP_WAIT_POLICY=PASSIVE, 1 thread, ...): wall and CPU
        seconds per step. On a busy machine the default's spinning threads wait for descheduled
        partners; ``csmae`` sets PASSIVE itself when the load average is at least the CPU count.

    .venv/bin/python bench/bench_cpu.py blas --threads 1
    .venv/bin/python bench/bench_cpu.py blas --threads 2
    .venv/bin/python bench/bench_cpu.py openmp --rounds 2
    flock /tmp/csmae-bigmem.lock .venv/bin/python bench/bench_cpu.py openmp --model csmae_sesd_base \
        --settings default,PASSIVE --steps 1 --rounds 2     # ViT-B SESD, batch 16 (5.8 GB)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def bench_blas(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    b, d, n = args.shape
    rng = np.random.default_rng(0)
    qn = rng.standard_normal((b, d), dtype=np.float32)
    an = rng.standard_normal((n, d), dtype=np.float32)
    q, a = torch.from_numpy(qn), torch.from_numpy(an)
    out = torch.empty(b, n)
    fns = {
        "torch (MKL)": lambda: torch.matmul(q, a.T, out=out),
        "numpy (OpenBLAS)": lambda: np.matmul(qn, an.T, out=out.numpy()),
    }
    for f in fns.values():
        f()
    spent = {k: [0.0, 0.0] for k in fns}
    load0 = os.getloadavg()[0]
    for _ in range(args.rounds):
        for k, f in fns.items():
            t, c = time.perf_counter(), time.process_time()
            for _ in range(args.iters):
                f()
            spent[k][0] += time.perf_counter() - t
            spent[k][1] += time.process_time() - c
    flop = 2 * b * d * n * args.iters * args.rounds
    print(f"\n{b} x {d} by {d} x {n} fp32, {args.threads} thread(s), {args.rounds} alternating rounds of "
          f"{args.iters}, load {load0:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("| BLAS | GFLOP/s wall | GFLOP per CPU-second x threads |")
    print("|---|---:|---:|")
    for k, (w, c) in spent.items():
        print(f"| {k} | {flop / w / 1e9:.1f} | {flop * args.threads / c / 1e9:.1f} |")


STEP = """
import json, os, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from csmae.demo.recipe import FULL, MODELS
from csmae.models import create_model
torch.manual_seed(0)
if sys.argv[3] == "demo":
    m, batch = create_model(MODELS["csmae"][0], **FULL.model_overrides("csmae")).train(), FULL.batch_size
else:
    m, batch = create_model(sys.argv[3]).train(), int(sys.argv[4])
b = {s: torch.randn(batch, spec.num_channels, 120, 120) for s, spec in m.sensors.items()}
opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
def step():
    loss, _ = m.training_loss(b)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
step()
t, c = time.perf_counter(), time.process_time()
for _ in range(int(sys.argv[2])):
    step()
n = int(sys.argv[2])
print(json.dumps({"wall": (time.perf_counter() - t) / n, "cpu": (time.process_time() - c) / n,
                  "load": os.getloadavg()[0]}))
"""

SETTINGS = {
    "default": ({}, 2),
    "PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2),
    "1 thread": ({}, 1),
    "GOMP_SPINCOUNT=10000": ({"GOMP_SPINCOUNT": "10000"}, 2),
}


def bench_openmp(args: argparse.Namespace) -> None:
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    names = args.settings.split(",")
    rows: dict[str, list[str]] = {k: [] for k in names}
    for _ in range(args.rounds):
        for name in names:
            extra, threads = SETTINGS[name]
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
            env.update(extra, PYTHONPATH=src)
            cmd = [sys.executable, "-c", STEP, str(threads), str(args.steps), args.model, str(args.batch)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows[name].append(f"{r['wall']:.2f} / {r['cpu']:.2f} (load {r['load']:.1f})")
    what = "demo CSMAE, batch 64" if args.model == "demo" else f"{args.model}, batch {args.batch}"
    print(f"\ntraining step of {what}, fp32, {args.steps} steps per process after one warm-up; "
          "wall s / CPU s per step, rounds alternate the settings\n")
    print("| setting | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |")
    print("|---|" + "---:|" * args.rounds)
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("blas")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--shape", type=int, nargs=3, default=[1024, 768, 16384], metavar=("B", "D", "N"))
    b.add_argument("--rounds", type=int, default=4)
    b.add_argument("--iters", type=int, default=2)
    o = sub.add_parser("openmp")
    o.add_argument("--rounds", type=int, default=2)
    o.add_argument("--steps", type=int, default=4)
    o.add_argument("--settings", default="default,PASSIVE,1 thread", help=f"comma list of {list(SETTINGS)}")
    o.add_argument("--model", default="demo", help="demo (the demo's CSMAE) or a preset (csmae_sesd_base)")
    o.add_argument("--batch", type=int, default=16, help="batch of a preset (the demo's is 64)")
    args = p.parse_args()
    if args.mode == "blas":  # both BLAS read their thread count when they load
        os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.threads)
    print(f"host: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    {"blas": bench_blas, "openmp": bench_openmp}[args.mode](args)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
