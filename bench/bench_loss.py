"""Side by side: the demo-sized models' training step with the masked-first reconstruction loss
(``csmae.losses.masked_mse``) and with the earlier all-patches formulation, alternating in one process.

    .venv/bin/python bench/bench_loss.py            # demo recipe's CSMAE and MAE-S2, bf16, batch 64

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="csmae,mae_s2,mae_s1")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="steps per timing")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.precision}; {args.rounds} alternating rounds of {args.steps} steps")
    print("| model | all-patches loss samples/s | masked-first loss samples/s | ratio |")
    print("|---|---:|---:|---:|")
    for key in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(MODELS[key][0], **FULL.model_overrides(key)).train()
        b = {s: torch.randn(args.batch, sp.num_channels, 120, 120) for s, sp in model.sensors.items()}
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

        def step(fn, model=model, b=b, opt=opt) -> float:
            losses.masked_mse = fn
            torch.manual_seed(1)  # same masks for both formulations
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss, _ = model.training_loss(b)
            loss.backward()
            opt.zero_grad(set_to_none=True)  # no optimizer step: both see the same weights
            return float(loss.detach())

        for fn in (all_patches_mse, CURRENT):
            step(fn)  # warm-up
        assert abs(step(all_patches_mse) - step(CURRENT)) < 1e-3, "formulations disagree"
        times = {all_patches_mse: 0.0, CURRENT: 0.0}
        for _ in range(args.rounds):
            for fn in (all_patches_mse, CURRENT):
                t = time.perf_counter()
                for _ in range(args.steps):
                    step(fn)
                times[fn] += time.perf_counter() - t
        losses.masked_mse = CURRENT
        n = args.rounds * args.steps * args.batch
        old, new = n / times[all_patches_mse], n / times[CURRENT]
        print(f"| {MODELS[key][1]} | {old:.0f} | {new:.0f} | {new / old:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
