"""Cost of the global-batch MIM gather on 2 CPU processes (gloo): NT-Xent forward + backward on descriptors.

    PYTHONPATH=src .venv/bin/python bench/bench_mim_gather.py [--batch 128] [--dim 768] [--steps 50]

Each of 2 ranks holds (B, D) S1 and S2 descriptors; per step it computes NT-Xent and its gradient
either on its own rows only (``trainer.mim_per_rank=true``) or against the gathered global batch
(the default: 2 all-gathers of (B, D) and 2 all-reduces of the (2B, D) gradient). Prints the
median milliseconds per step of both and the difference (the gather's cost per step, which the
encoder step of a ViT-B at the same batch dwarfs). Over gloo on one host this is a CPU-memory
copy; NCCL over NVLink/InfiniBand is a different figure (not measured here).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: dict) -> None:
    from csmae.losses import nt_xent
    from csmae.training.gather import RowGather

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(rank)
    z1 = torch.randn(args.batch, args.dim, generator=g, requires_grad=True)
    z2 = torch.randn(args.batch, args.dim, generator=g, requires_grad=True)
    gather = RowGather((args.batch,) * world, rank)
    times: dict[str, list[float]] = {"per rank": [], "global (gathered)": []}
    for step in range(args.steps + 5):
        for name, gth in (("per rank", None), ("global (gathered)", gather)):
            dist.barrier()
            t = time.perf_counter()
            nt_xent(z1, z2, 0.5, gather=gth).backward()
            dt = time.perf_counter() - t
            if step >= 5:
                times[name].append(dt)
    if rank == 0:
        out.update({k: statistics.median(v) * 1e3 for k, v in times.items()})
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128, help="per rank")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as m:
        out = m.dict()
        mp.spawn(_worker, args=(2, port, args, out), nprocs=2, join=True)
        res = dict(out)
    print(f"2 gloo processes, B={args.batch} per rank, D={args.dim}, fp32, median of {args.steps} steps")
    print("| NT-Xent fwd+bwd | ms/step |\n|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v:.2f} |")
    print(f"gather cost: {res['global (gathered)'] - res['per rank']:.2f} ms/step", file=sys.stdout)


if __name__ == "__main__":
    main()
