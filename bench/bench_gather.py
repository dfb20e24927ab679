"""Communication cost of the global-batch MIM loss on 2 processes, beside DDP's gradient all-reduce.

The MIM term over the global batch (issue 13.1) all-gathers every rank's pooled descriptors (one
(B, D) tensor per sensor) with gradients flowing back, i.e. an all_gather forward and a
reduce-scatter-like exchange backward (``torch.distributed.nn.functional.all_gather``). This times
exactly that exchange at the training shapes, and for scale one all-reduce of a ViT-B SESD's
gradients (what DDP already does every step, overlapped with the backward pass).

    python bench/bench_gather.py --batch 512 --dim 768            # NCCL when 2 GPUs, else gloo on CPU
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, args: argparse.Namespace, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = torch.cuda.device_count() >= world and not args.cpu
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    dev = torch.device(f"cuda:{rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(dev)
    z = [torch.randn(args.batch, args.dim, device=dev, requires_grad=True) for _ in range(2)]  # S1, S2
    try:  # the training code's own gather and loss, when this checkout has them (issue 13.1)
        from csmae.losses import nt_xent
        from csmae.training.gather import RowGather

        row_gather = RowGather((args.batch,) * world, rank)
        how = "csmae RowGather + nt_xent"

        def gather_step() -> None:
            nt_xent(z[0], z[1], 0.5, gather=row_gather).backward()

        def local_step() -> None:
            nt_xent(z[0], z[1], 0.5).backward()
    except ImportError:
        from torch.distributed.nn.functional import all_gather

        how = "stand-in: torch.distributed.nn all_gather"

        def gather_step() -> None:
            parts = [torch.cat(all_gather(t), dim=0) for t in z]  # (world * B, D) each
            (z[0] @ parts[1].T).logsumexp(1).sum().backward()

        def local_step() -> None:
            (z[0] @ z[1].T).logsumexp(1).sum().backward()

    grads = torch.randn(args.grad_numel, device=dev)

    def allreduce() -> None:
        dist.all_reduce(grads)

    out = {}
    for name, fn in (("gather", gather_step), ("local", local_step), ("allreduce", allreduce)):
        for _ in range(3):
            fn()
        if cuda:
            torch.cuda.synchronize()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            fn()
        if cuda:
            torch.cuda.synchronize()
        out[name] = (time.perf_counter() - t0) / args.iters
    if rank == 0:
        backend = f"NCCL on {torch.cuda.get_device_name(dev)}" if cuda else "gloo on CPU"
        mb = 2 * args.batch * args.dim * 4 / 1e6
        print(f"\n2 processes, {backend}, torch {torch.__version__}\n")
        print("| exchange | payload per rank | ms per step |")
        print("|---|---:|---:|")
        print(
            f"| MIM loss fwd + bwd over the global batch ({how}), 2 x ({args.batch}, {args.dim}) fp32 "
            f"| {mb:.1f} MB | {1000 * out['gather']:.2f} |"
        )
        print(f"| the same loss on this rank's rows only | - | {1000 * out['local']:.2f} |")
        print(f"| **the gather's cost per step** | | **{1000 * (out['gather'] - out['local']):.2f}** |")
        print(
            f"| all_reduce of {args.grad_numel / 1e6:.0f} M fp32 gradients (DDP, for scale) | "
            f"{args.grad_numel * 4 / 1e6:.0f} MB | {1000 * out['allreduce']:.2f} |"
        )
    dist.barrier()  # no rank tears down while another still talks to it
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=512, help="per-rank batch")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--grad-numel", type=int, default=0, help="default: csmae_sesd_base's parameter count")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--cpu", action="store_true", help="gloo on CPU even with GPUs")
    args = ap.parse_args()
    if not args.grad_numel:
        import csmae

        args.grad_numel = sum(p.numel() for p in csmae.create_model("csmae_sesd_base").parameters())
    mp.spawn(_worker, args=(2, args, 29500 + os.getpid() % 1000), nprocs=2, join=True)


if __name__ == "__main__":
    main()
