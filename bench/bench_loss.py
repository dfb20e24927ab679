"""Side by side: the demo-sized models' training step with the masked-first reconstruction loss
(``csmae.losses.masked_mse``) and with the earlier all-patches formulation, alternating in one process.

    .venv/bin/python bench/bench_loss.py            # demo recipe's three models, bf16, batch 64
    python bench/bench_loss.py --device cuda --models csmae_sesd_base --batch 128   # a preset on a GPU

The earlier formulation (kept here only as the baseline) computed (pred - target)^2 for every patch,
averaged per patch, then masked; both give the same value (checked here on every step pair).
"""

from __future__ import annotations

import argparse
import time

import torch

from csmae import losses
from csmae.demo.recipe import FULL, MODELS
from csmae.models import create_model

CURRENT = losses.masked_mse


def all_patches_mse(pred, target, mask, *, norm_pix=False):
    pred, target = losses._upcast(pred), losses._upcast(target)
    if norm_pix:
        target = losses.normalize_patches(target)
    per_patch = (pred - target).pow(2).mean(dim=-1)  # (N, L)
    m = mask.to(per_patch.dtype)
    return (per_patch * m).sum() / m.sum()


def fused_all_patches_mse(pred, target, mask, *, norm_pix=False):
    """Sync-free candidate: one fused MSE kernel over all patches, then the masked mean."""
    pred, target = losses._upcast(pred), losses._upcast(target)
    if norm_pix:
        target = losses.normalize_patches(target)
    per_patch = torch.nn.functional.mse_loss(pred, target, reduction="none").mean(dim=-1)  # (N, L)
    m = mask.to(per_patch.dtype)
    return (per_patch * m).sum() / m.sum()


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="csmae,mae_s2,mae_s1")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="steps per timing")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.precision}; {args.rounds} alternating rounds of {args.steps} steps")
    print("| model | all-patches loss samples/s | masked-first loss samples/s | ratio | fused all-patches |")
    print("|---|---:|---:|---:|---:|")
    dev = torch.device(args.device)
    for key in args.models.split(","):
        torch.manual_seed(0)
        if key in MODELS:
            name, title = MODELS[key][0], MODELS[key][1]
            model = create_model(name, **FULL.model_overrides(key)).train().to(dev)
        else:  # a registry preset as it is
            title, model = key, create_model(key).train().to(dev)
        shapes = {s: (args.batch, sp.num_channels, 120, 120) for s, sp in model.sensors.items()}
        b = {s: torch.randn(*shape, device=dev) for s, shape in shapes.items()}
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

        def step(fn, model=model, b=b, opt=opt) -> float:
            losses.masked_mse = fn
            torch.manual_seed(1)  # same masks for every formulation
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss, _ = model.training_loss(b)
            loss.backward()
            opt.zero_grad(set_to_none=True)  # no optimizer step: both see the same weights
            return float(loss.detach())

        variants = (all_patches_mse, CURRENT, fused_all_patches_mse)
        for fn in variants:
            step(fn)  # warm-up
        ref = step(all_patches_mse)
        assert all(abs(step(fn) - ref) < 1e-3 for fn in variants), "formulations disagree"
        times = dict.fromkeys(variants, 0.0)
        for _ in range(args.rounds):
            for fn in variants:
                sync(dev)
                t = time.perf_counter()
                for _ in range(args.steps):
                    step(fn)
                sync(dev)
                times[fn] += time.perf_counter() - t
        losses.masked_mse = CURRENT
        n = args.rounds * args.steps * args.batch
        old, new, fused = (n / times[fn] for fn in variants)
        print(f"| {title} | {old:.0f} | {new:.0f} | {new / old:.2f}x | {fused:.0f} |", flush=True)


if __name__ == "__main__":
    main()
