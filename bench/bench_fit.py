"""Training throughput of ``csmae fit``: samples/s for SESD sizes and precisions, and the data-wait share.

Runs the real training path (``csmae.training.run.fit``: Lightning Trainer, DataModule over a
prepared store, AdamW, schedule, checkpoints off) for a few steps per setting and reports the
steady-state samples/s (the first ``--warmup`` steps are not timed), the share of wall time the
training loop spent waiting in ``next(loader)``, and on GPU the model FLOP utilisation.

    .venv/bin/python bench/bench_fit.py                       # CPU: tiny/small/base x fp32/bf16
    .venv/bin/python bench/bench_fit.py --sizes base --precisions bf16-mixed 16-mixed \\
        --accelerator gpu --batch-size 128 --steps 30 --workers 8 --n 4096   # one GPU
    # issue 13.3: host vs device data path on a native-layout store, beside the bare step
    python bench/bench_fit.py --accelerator gpu --sizes base --precisions bf16-mixed --batch-size 512 \\
        --layout native --device-transforms false true --bare --workers 12 --n 4096

    # trainer.bf16_weight_copies off vs on, alternating rounds, 1 thread: compare samples per CPU-second
    python bench/bench_fit.py --sizes tiny --precisions bf16-mixed --threads 1 --workers 1 \
        --weight-copies false true --rounds 3

``--bare`` also times the bare training step (``training_loss`` + backward + fused AdamW on random
inputs already on the device, no Lightning, no loader) at the same size, batch and precision in the
same process, and prints fit's samples/s as a share of it.

Prints Markdown table rows.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

#: dense peak TFLOP/s by (device name fragment, precision) for the MFU column
PEAK_TFLOPS = {
    ("H100", "bf16"): 989.0,
    ("H100", "16"): 989.0,
    ("H100", "32"): 494.0,
    ("H200", "bf16"): 989.0,
    ("H200", "16"): 989.0,
    ("H200", "32"): 494.0,
    ("A100", "bf16"): 312.0,
    ("A100", "16"): 312.0,
    ("A100", "32"): 156.0,
}


class StepClock(pl.Callback):
    """Per-step wall times and cumulative data wait (from the ResumableLoader)."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.cpu: list[float] = []  # this process's CPU time (loader workers not included)
        self.waits: list[float] = []
        self.batch: int = 0

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        self.cpu.append(time.process_time())
        self.waits.append(getattr(trainer.train_dataloader, "wait_s", 0.0))
        self.batch = len(batch["id"]) * trainer.world_size


def train_flops(model_name: str, overrides: dict[str, Any], batch: int, device: str) -> float:
    """FLOPs of one forward+backward of ``training_loss`` (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    import csmae

    model = csmae.create_model(model_name, **overrides).to(device)
    inputs = {
        s: torch.randn(batch, spec.num_channels, 120, 120, device=device) for s, spec in model.sensors.items()
    }
    with FlopCounterMode(display=False) as counter:
        loss, _ = model.training_loss(inputs)
        loss.backward()
    return float(counter.get_total_flops())


def bare_step(size: str, precision: str, batch: int, device: str, steps: int, warmup: int) -> float:
    """Samples/s of the bare training step: forward + backward + fused AdamW, inputs on the device."""
    import csmae

    torch.manual_seed(0)
    model = csmae.create_model(f"csmae_sesd_{size}").to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95), fused=True)
    x = {s: torch.randn(batch, sp.num_channels, 120, 120, device=device) for s, sp in model.sensors.items()}
    dev_type = torch.device(device).type
    lowp = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision.split("-")[0])

    def step() -> None:
        with torch.autocast(dev_type, dtype=lowp or torch.float32, enabled=lowp is not None):
            loss, _ = model.training_loss(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if dev_type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - t0)


def run_one(
    store: Path,
    size: str,
    precision: str,
    args: argparse.Namespace,
    work: Path,
    device_transforms: str = "auto",
    weight_copies: str = "false",
) -> dict[str, Any]:
    from csmae.training.config import load_config
    from csmae.training.run import fit

    batch = args.batch_size or {"tiny": 32, "small": 16, "base": 8, "large": 4}[size]
    steps = args.warmup + args.steps
    overrides = [
        f"model.name=csmae_sesd_{size}",
        f"data.sources=[{store}]",
        "data.split=null",
        "data.val_split=null",
        f"data.batch_size={batch}",
        f"data.num_workers={args.workers}",
        f"trainer.precision={precision}",
        f"trainer.accelerator={args.accelerator}",
        "trainer.devices=1",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=1000",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1000",
        "callbacks.recon_pictures=false",
        "callbacks.checkpoint_every_n_steps=null",
        "callbacks.checkpoint_every_n_epochs=0",
        "schedule.warmup_epochs=0",
        f"data.device_transforms={device_transforms}",
        f"trainer.bf16_weight_copies={weight_copies}",
    ]
    clock = StepClock()
    out = work / f"{size}-{precision}-{device_transforms}-{weight_copies}"
    shutil.rmtree(out, ignore_errors=True)
    fit(load_config(None, overrides), out=out, callbacks=[clock])
    w = args.warmup
    t = clock.ends[-1] - clock.ends[w - 1]
    wait = clock.waits[-1] - clock.waits[w - 1]
    n = clock.batch * (len(clock.ends) - w)
    cpu = clock.cpu[-1] - clock.cpu[w - 1]
    row = {
        "size": size,
        "precision": precision,
        "batch": batch,
        "steps": len(clock.ends) - w,
        "samples_per_s": n / t,
        "samples_per_cpu_s": n / cpu,
        "data_wait": wait / t,
        "step_s": t / (len(clock.ends) - w),
        "mfu": None,
    }
    if args.accelerator == "gpu":
        name = torch.cuda.get_device_name()
        key = "bf16" if precision.startswith("bf16") else ("16" if precision.startswith("16") else "32")
        peak = next((v for (frag, p), v in PEAK_TFLOPS.items() if frag in name and p == key), None)
        flops = train_flops(f"csmae_sesd_{size}", {}, batch, "cuda")
        if peak:
            row["mfu"] = flops / row["step_s"] / (peak * 1e12)
        row["tflops"] = flops / row["step_s"] / 1e12
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["tiny", "small", "base"])
    p.add_argument("--precisions", nargs="+", default=["32", "bf16-mixed"])
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--batch-size", type=int, default=None, help="default: tiny 32, small 16, base 8")
    p.add_argument("--steps", type=int, default=4, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--n", type=int, default=192, help="pairs in the synthetic store")
    p.add_argument("--data", type=Path, help="an existing prepared store (default: a synthetic one)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument(
        "--layout", choices=["float32", "native"], default="float32",
        help="layout of the synthetic store (native: uint16 S2 at 10/20 m, what the device path ships)",
    )
    p.add_argument(
        "--device-transforms", nargs="+", default=["auto"], choices=["auto", "true", "false"],
        help="data.device_transforms settings to run, one row each (auto = on with a GPU)",
    )
    p.add_argument("--bare", action="store_true", help="also time the bare step in this process")
    p.add_argument(
        "--weight-copies", nargs="+", default=["false"], choices=["false", "true"],
        help="trainer.bf16_weight_copies settings to run (bf16-mixed only), one row each",
    )
    p.add_argument("--rounds", type=int, default=1, help="repeat the settings, alternating their order")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_fit-"))
    try:
        store = args.data
        if store is None:
            from csmae.data.synth import write_synthetic

            store = write_synthetic(
                work / "store", n=args.n, seed=0, format="store", s2_bands=None, layout=args.layout
            )[0]
        dev = (
            torch.cuda.get_device_name()
            if args.accelerator == "gpu"
            else f"CPU, {torch.get_num_threads()} threads"
        )
        print(
            f"device: {dev}; torch {torch.__version__}; "
            f"data: {'synthetic ' + args.layout + ' store' if args.data is None else store}; "
            f"{args.workers} loader worker(s)"
        )
        print(
            "| model | precision | batch | device transforms | bf16 weight copies | round | timed steps "
            "| samples/s | samples/CPU-s | s/step | data wait | MFU | bare step samples/s | fit / bare |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        device = "cuda" if args.accelerator == "gpu" else "cpu"
        per_cpu: dict[tuple[str, str, str, str], list[float]] = {}
        for size in args.sizes:
            for precision in args.precisions:
                bare = None
                copies = args.weight_copies if precision == "bf16-mixed" else ["false"]
                for rnd in range(args.rounds):
                    for dt in args.device_transforms:
                        order = copies if rnd % 2 == 0 else copies[::-1]
                        for wc in order:
                            r = run_one(store, size, precision, args, work, dt, wc)
                            per_cpu.setdefault((size, precision, dt, wc), []).append(r["samples_per_cpu_s"])
                            if args.bare and bare is None:
                                bare = bare_step(size, precision, r["batch"], device, args.steps, args.warmup)
                            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
                            ratio = f"{100 * r['samples_per_s'] / bare:.0f}%" if bare else "-"
                            print(
                                f"| csmae_sesd_{size} | {precision} | {r['batch']} | {dt} | {wc} | "
                                f"{rnd + 1} | "
                                f"{r['steps']} | {r['samples_per_s']:.2f} | {r['samples_per_cpu_s']:.2f} | "
                                f"{r['step_s']:.3f} | {100 * r['data_wait']:.1f}% | {mfu} | "
                                f"{f'{bare:.1f}' if bare else '-'} | {ratio} |",
                                flush=True,
                            )
        if args.rounds > 1:
            print("\nmean samples per CPU-second over the rounds (min..max):")
            for (size, precision, dt, wc), v in per_cpu.items():
                print(
                    f"  csmae_sesd_{size} {precision} device_transforms={dt} bf16_weight_copies={wc}: "
                    f"{sum(v) / len(v):.3f} ({min(v):.3f}..{max(v):.3f}, {len(v)} rounds)"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
