"""Compiled vs eager embedding (``model.embed``, both sensors) on this CPU, side by side in one process.

Measures, per model and precision: pairs/s of eager and of the inductor-frozen graph
(:mod:`csmae.models.compiled`, what ``csmae embed`` uses), alternating timed rounds; the first
compiled call's time (compilation included: a cold or a warm on-disk cache, run the script twice
with the same ``--cache-dir`` to see both); the lowest cosine of compiled vs eager descriptors; and the
bf16 / fp32 matmul rate (2048^2) measured in the same rounds (% of matmul = achieved FLOP/s / that rate).
From these it prints the job size from which compiling pays (compile time / time saved per pair).

    .venv/bin/python bench/bench_embed_compile.py --models csmae_sesd_small,csmae_sesd_base
    .venv/bin/python bench/bench_embed_compile.py --precisions bf16 --rounds 3 --cache-dir /tmp/ind
    python bench/bench_embed_compile.py --device cuda --models csmae_sesd_base --batch 512 --precisions bf16

On CUDA (where ``csmae embed`` stays eager until this is measured to pay) the graph is compiled with
freezing, ``max_autotune`` and CUDA graphs (``--gpu-options``).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from csmae.models import create_model
from csmae.models.compiled import TOLERANCE, CompiledEmbed, default_cache_dir
from csmae.models.precision import cast_matmul_weights

DEV = torch.device("cpu")


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(dtype: torch.dtype, n: int = 2048, reps: int = 3) -> float:
    if dtype == torch.bfloat16 and DEV.type == "cpu":
        from csmae.models.precision import cpu_bf16

        if not cpu_bf16()[0]:  # emulated bf16: hundreds of times slower than fp32, a small one will do
            n, reps = 512, 1
    a, b = torch.randn(n, n, device=DEV).to(dtype), torch.randn(n, n, device=DEV).to(dtype)
    a @ b
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def batch_of(model, n: int) -> dict[str, torch.Tensor]:
    c = model.config
    g = torch.Generator().manual_seed(0)
    return {
        s: torch.randn(n, len(model.sensors[s].bands), c.img_size, c.img_size, generator=g).to(DEV)
        for s in model.sensors
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="csmae_sesd_small,csmae_sesd_base")
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="alternating timed rounds (eager, compiled)")
    p.add_argument("--iters", type=int, default=2, help="batches per timed round")
    p.add_argument("--cache-dir", default=None, help="inductor cache (default: csmae's)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--cpu-options",
        default="freezing",
        help="inductor options set to True on CPU (comma-separated; csmae embed uses freezing only), "
        "e.g. freezing,max_autotune (inductor's own C++ GEMM template instead of the BLAS)",
    )
    p.add_argument(
        "--eager-only",
        action="store_true",
        help="time eager only (e.g. bf16 on a CPU that emulates it, to show the cliff)",
    )
    p.add_argument(
        "--gpu-options",
        default="freezing,max_autotune,triton.cudagraphs",
        help="inductor options set to True on CUDA (comma-separated)",
    )
    args = p.parse_args()
    global DEV
    DEV = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"host: {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    rate = {p: matmul_rate(torch.bfloat16 if p == "bf16" else torch.float32)
            for p in args.precisions.split(",")}
    print("matmul 2048^2 (512^2 for emulated bf16): "
          + ", ".join(f"{p} {r / 1e9:.1f} GFLOP/s" for p, r in rate.items()))
    cpu_opts = {o: True for o in args.cpu_options.split(",") if o}
    print(
        "\n| model | precision | eager pairs/s | compiled pairs/s | ratio | eager % matmul "
        "| compiled % matmul | first compiled call s | min cosine | pays from (pairs) | load |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        for prec in args.precisions.split(","):
            model = create_model(name).eval().to(DEV)
            if prec == "bf16":
                cast_matmul_weights(model)
            amp = torch.autocast(DEV.type, dtype=torch.bfloat16, enabled=prec == "bf16")
            x = batch_of(model, args.batch)
            with torch.inference_mode(), amp:
                fc = FlopCounterMode(display=False)
                with fc:
                    model.embed(batch_of(model, 2))
                flop_pair = fc.get_total_flops() / 2
                if DEV.type == "cpu":  # as csmae embed compiles, without its AMX / job-size gate
                    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(args.cache_dir or default_cache_dir())
                    compiler = None
                    if cpu_opts != {"freezing": True}:

                        def compiler(fn, o=cpu_opts):
                            return torch.compile(fn, backend="inductor", dynamic=False, options=o)
                else:  # csmae embed stays eager on CUDA until this is measured to pay
                    opts = {o: True for o in args.gpu_options.split(",") if o}

                    def compiler(fn, o=opts):
                        return torch.compile(fn, dynamic=False, options=o)

                if args.eager_only:
                    model.embed(x)  # warm-up
                    t, rates = 0.0, []
                    for _ in range(args.rounds):
                        sync()
                        t0 = time.perf_counter()
                        for _ in range(args.iters):
                            model.embed(x)
                        sync()
                        t += time.perf_counter() - t0
                        rates.append(matmul_rate(torch.bfloat16 if prec == "bf16" else torch.float32))
                    e = args.rounds * args.iters * args.batch / t
                    mm = sum(rates) / len(rates)
                    print(f"| {name} | {prec} | {e:.2f} | - | - | {100 * e * flop_pair / mm:.0f} % | - | - "
                          f"| - | - | {os.getloadavg()[0]:.1f} |", flush=True)
                    continue
                runner = CompiledEmbed(
                    model,
                    batch_size=args.batch,
                    precision=prec,
                    reason=None,
                    tolerance=TOLERANCE[prec],
                    compiler=compiler,
                    check_speed=False,
                )
                runner(x)  # compile + check against eager
                if not runner.compiled:
                    print(f"| {name} | {prec} | compile failed: {runner.reason} |")
                    continue
                model.embed(x)  # eager warm-up
                times: dict[str, float] = {"eager": 0.0, "compiled": 0.0}
                rates = []
                for _ in range(args.rounds):  # alternating: eager, compiled, the matmul yardstick
                    for kind, fn in (("eager", model.embed), ("compiled", runner)):
                        sync()
                        t = time.perf_counter()
                        for _ in range(args.iters):
                            fn(x)
                        sync()
                        times[kind] += time.perf_counter() - t
                    rates.append(matmul_rate(torch.bfloat16 if prec == "bf16" else torch.float32))
                mm = sum(rates) / len(rates)
            n = args.rounds * args.iters * args.batch
            e, c = n / times["eager"], n / times["compiled"]
            saved = 1 / e - 1 / c
            pays = f"{runner.compile_s / saved:,.0f}" if saved > 0 else "never"
            print(
                f"| {name} | {prec} | {e:.1f} | {c:.1f} | {c / e:.2f} | {100 * e * flop_pair / mm:.0f} % "
                f"| {100 * c * flop_pair / mm:.0f} % | {runner.compile_s:.1f} | {runner.min_cosine:.6f} "
                f"| {pays} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
            torch._dynamo.reset()


if __name__ == "__main__":
    main()
