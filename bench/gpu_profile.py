"""Where a training step's time goes on a GPU: batch-size scaling and the top kernels.

    python bench/gpu_profile.py --device cuda                 # csmae_sesd_base, bf16 autocast
    .venv/bin/python bench/gpu_profile.py --device cpu --model csmae_sesd_tiny --batches 4 8   # smoke

Prints samples/s and step time per batch size (a launch-bound step gains samples/s with batch size
at a constant step time), then torch.profiler's table of the most expensive operators and kernels
of one step at ``--profile-batch``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from csmae.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="csmae_sesd_base")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--profile-batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--rows", type=int, default=30)
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(args.model).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(b: dict[str, torch.Tensor]) -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss, _ = model.training_loss(b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def batch(n: int) -> dict[str, torch.Tensor]:
        return {s: torch.randn(n, sp.num_channels, 120, 120, device=dev) for s, sp in model.sensors.items()}

    print(f"{args.model} on {torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}, bf16 autocast")
    print("| batch | step ms | samples/s | peak GiB |")
    print("|---|---|---|---|")
    for n in args.batches:
        b = batch(n)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(3):
            step(b)
        sync()
        t = time.perf_counter()
        for _ in range(args.iters):
            step(b)
        sync()
        ms = 1000 * (time.perf_counter() - t) / args.iters
        peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
        print(f"| {n} | {ms:.1f} | {n / ms * 1000:.0f} | {peak:.1f} |", flush=True)
    b = batch(args.profile_batch)
    step(b)
    sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step(b)
        sync()
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    if dev.type == "cuda":
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.device_time for e in kernels) / 1000
        n_k = len(kernels)
        print(f"\none step at batch {args.profile_batch}: {n_k} kernels, {busy:.1f} ms of kernel time")
    print(events.table(sort_by=key, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
