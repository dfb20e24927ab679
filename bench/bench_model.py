"""Model throughput on this CPU: ViT-B training step and descriptor extraction, fp32 vs bf16 autocast.

Measures, in one process:
  (a) a training step of ``--model`` (default csmae_sesd_base) at ``--train-batch`` (16): forward with all
      four reconstructions + MIM, backward, AdamW step (fused by default);
  (b) ``model.embed`` of both sensors at ``--embed-batch`` (64) under inference_mode;
  (c) the bf16 and fp32 matmul rate of large square matrices (the yardstick).
FLOPs per sample are counted with torch.utils.flop_counter.FlopCounterMode (matmuls, convs, attention).
Prints a Markdown table with the reference implementation's figures beside ours.

``--variants`` (issue 13.4) times other forms of the bf16 training step side by side, each on a fresh
model with the same initial weights, and checks its first loss and updated weights against the base
step on the same inputs and masks (differences within bf16 noise are expected, larger ones are
printed as a failure):
  base        autocast over fp32 parameters, fused AdamW (what ``csmae fit`` runs);
  bf16params  bf16 copies of the Linear/Conv parameters (the only ones autocast casts), fp32 master
              weights in a fused AdamW, copied back after each step: no per-step weight casts;
  cudagraph   (CUDA only) the whole step (forward, backward, capturable fused AdamW) captured once in a
              CUDA graph and replayed: no per-kernel launch cost on the host.

``--demo KEY`` times the demo's model KEY (csmae, mae_s1, mae_s2: the ``csmae demo`` recipe, D=96)
at the recipe's batch (64) instead; ``--rounds R`` alternates the precisions R times (side by side in
one process). % of matmul is given against the matmul rate of the row's own precision (fp32 rows
against fp32) and against bf16; on a CPU without native bf16 the bf16 yardstick is a 1024^2 matmul
(a 4096^2 one would take minutes there).

    .venv/bin/python bench/bench_model.py                 # full (lead, quiet machine)
    .venv/bin/python bench/bench_model.py --precisions fp32 --only train --profile   # where fp32 goes
    .venv/bin/python bench/bench_model.py --demo csmae --only train --rounds 3 --iters 2 --warmup 1
    .venv/bin/python bench/bench_model.py --iters 2 --warmup 1   # quick
    python bench/bench_model.py --device cuda --train-batch 128 --embed-batch 512 --matmul-n 8192  # GPU
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from csmae.models import create_model
from csmae.models.precision import cast_matmul_weights

#: Reference implementation, measured by the lead with the same torch (issue 3).
REFERENCE = {
    "train fp32": "3.2 samples/s (74.8 GFLOP/sample)",
    "train bf16": "4.3 samples/s (~15 % of 2.09 TFLOP/s)",
    "embed fp32": "~11 samples/s (22.3 GFLOP/pair)",
    "embed bf16": "~44 samples/s (~47 %)",
    "matmul bf16": "2.09 TFLOP/s",
    "matmul fp32": "-",
}


DEVICE = torch.device("cpu")
VARIANTS = ("base", "bf16params", "cudagraph")


class MasterWeights:
    """bf16 Linear/Conv parameters for the step, fp32 master copies updated by fused AdamW.

    LayerNorm weights, tokens and every other parameter stay fp32 (CPU LayerNorm needs fp32
    parameters with fp32 inputs; autocast does not cast them either).
    """

    def __init__(self, model: torch.nn.Module, **adamw: object) -> None:
        fp32 = {id(p): p.detach().clone() for p in model.parameters()}
        self.low = cast_matmul_weights(model)
        low_ids = {id(p) for p in self.low}
        self.rest = [p for p in model.parameters() if id(p) not in low_ids]
        self.master = [fp32[id(p)] for p in self.low]  # fp32
        self.opt = torch.optim.AdamW(self.master + self.rest, fused=True, **adamw)  # type: ignore[arg-type]

    def fp32_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The model's state with the fp32 master weights in place of the bf16 copies."""
        master = {id(p): m for p, m in zip(self.low, self.master)}
        return {k: master.get(id(p), p).detach() for k, p in model.named_parameters()}

    def step(self) -> None:
        for m, p in zip(self.master, self.low):
            m.grad = p.grad.float() if p.grad is not None else None
            p.grad = None
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        torch._foreach_copy_([p.data for p in self.low], self.master)  # fp32 -> bf16, one rounding


def train_variant(name: str, model_name: str, b: dict, noise: dict, adamw: dict) -> tuple:
    """(step function, [loss of the first step], weights function) of one form of the bf16 step.

    The weights function gives the fp32 weights (the master copies where there are some).
    """
    torch.manual_seed(0)
    model = create_model(model_name).to(DEVICE).train()
    first: list[float] = []
    if name == "base":
        opt = torch.optim.AdamW(model.parameters(), fused=True, **adamw)

        def step() -> None:
            with autocast():
                loss, _ = model.training_loss(b, noise)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if not first:
                first.append(float(loss.detach()))
        return step, first, lambda: {k: p.detach() for k, p in model.named_parameters()}
    if name == "bf16params":
        mw = MasterWeights(model, **adamw)

        def step() -> None:
            with autocast():
                loss, _ = model.training_loss(b, noise)
            loss.backward()
            mw.step()
            if not first:
                first.append(float(loss.detach()))
        return step, first, lambda: mw.fp32_state(model)
    if name == "cudagraph":
        if DEVICE.type != "cuda":
            raise ValueError("cudagraph needs a CUDA device")
        opt = torch.optim.AdamW(model.parameters(), fused=True, capturable=True, **adamw)
        cast = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)  # required in a capture
        # the first step runs eagerly (it is the step compared with the base step), then warm-up
        with cast:
            loss, _ = model.training_loss(b, noise)
        loss.backward()
        opt.step()
        first.append(float(loss.detach()))
        snap = {k: p.detach().clone() for k, p in model.named_parameters()}  # weights after that step
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                opt.zero_grad(set_to_none=True)
                with cast:
                    loss, _ = model.training_loss(b, noise)
                loss.backward()
                opt.step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            with cast:
                loss, _ = model.training_loss(b, noise)
            loss.backward()
            opt.step()
        return graph.replay, first, lambda: snap
    raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(dtype: torch.dtype, n: int, seconds: float) -> tuple[float, float]:
    """(wall FLOP/s, CPU-time FLOP/s x threads) of an n x n matmul (on a GPU both are the wall rate)."""
    if dtype == torch.bfloat16 and DEVICE.type == "cpu":
        from csmae.models.precision import cpu_bf16

        if not cpu_bf16()[0]:
            n = min(n, 1024)  # emulated bf16: hundreds of times slower than fp32
    a, b = torch.randn(n, n, device=DEVICE).to(dtype), torch.randn(n, n, device=DEVICE).to(dtype)
    for _ in range(3):
        a @ b
    sync()
    k, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or k < 3:
        a @ b
        k += 1
        if DEVICE.type == "cuda" and k % 10 == 0:
            sync()
    sync()
    flops = 2 * n**3 * k
    wall = flops / (time.perf_counter() - t0)
    if DEVICE.type == "cuda":
        return wall, wall
    return wall, flops * torch.get_num_threads() / (time.process_time() - c0)


def batch(model, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        s: torch.randn(n, spec.num_channels, 120, 120, generator=g).to(DEVICE)
        for s, spec in model.sensors.items()
    }


def count_flops(fn, n: int) -> float:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops() / n


def timed(fn, iters: int, warmup: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds / threads) per call: the second is what a quiet machine would give."""
    for _ in range(warmup):
        fn()
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        fn()
    sync()
    wall = (time.perf_counter() - t0) / iters
    if DEVICE.type == "cuda":
        return wall, wall
    return wall, (time.process_time() - c0) / iters / torch.get_num_threads()


def autocast() -> torch.autocast:
    return torch.autocast(DEVICE.type, dtype=torch.bfloat16)


def device_name() -> str:
    return torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="csmae_sesd_base")
    ap.add_argument("--demo", default="", help="the demo recipe's model (csmae, mae_s1, mae_s2) at batch 64")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds over the precisions (train)")
    ap.add_argument("--profile", action="store_true", help="top ops of one training step per precision")
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--embed-batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--matmul-n", type=int, default=4096)
    ap.add_argument("--matmul-seconds", type=float, default=3.0)
    ap.add_argument("--optimizer", choices=["fused", "foreach", "forloop"], default="fused")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    ap.add_argument("--only", default="train,embed", help="comma list: train,embed")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument(
        "--compare-fused",
        action="store_true",
        help="also time bf16 with timm's fused SDPA attention (before csmae's CPU policy)",
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument(
        "--variants", default="",
        help="comma list of bf16 step forms to time side by side (base,bf16params,cudagraph or all)",
    )
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)

    import os

    print(f"load average {os.getloadavg()[0]:.1f} at start")
    rates = {
        "bf16": matmul_rate(torch.bfloat16, args.matmul_n, args.matmul_seconds),
        "fp32": matmul_rate(torch.float32, args.matmul_n, args.matmul_seconds),
    }
    if args.demo:
        from csmae.demo.recipe import FULL, MODELS

        args.model = MODELS[args.demo][0]
        model = create_model(args.model, **FULL.model_overrides(args.demo)).to(DEVICE)
        args.train_batch = FULL.batch_size
    else:
        model = create_model(args.model).to(DEVICE)
    run_model = torch.compile(model) if args.compile else model
    rows = []
    parts, precisions = args.only.split(","), args.precisions.split(",")

    if "train" in parts:
        model.train()
        b = batch(model, args.train_batch)
        params = [p for p in model.parameters() if p.requires_grad]
        opt_kw: dict[str, dict] = {
            "fused": {"fused": True}, "foreach": {"foreach": True}, "forloop": {"foreach": False}
        }
        opt = torch.optim.AdamW(
            params, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95), **opt_kw[args.optimizer]
        )
        fb = batch(model, 2)
        flops = count_flops(lambda: model.training_loss(fb)[0].backward(), 2)
        opt.zero_grad(set_to_none=True)
        variants = [(p, "auto") for p in precisions] + ([("bf16", "fused")] if args.compare_fused else [])
        steps, spent = {}, {}
        for prec, attention in variants:
            ctx = autocast if prec == "bf16" else torch.enable_grad
            opt_time = [0.0]

            def step(ctx=ctx, opt_time=opt_time, attention=attention):
                model.config.attention = attention
                with ctx():
                    loss, _ = run_model.training_loss(b) if not args.compile else model.training_loss(b)
                loss.backward()
                t = time.perf_counter()
                opt.step()
                opt.zero_grad(set_to_none=True)
                opt_time[0] += time.perf_counter() - t

            steps[(prec, attention)] = (step, opt_time)
            spent[(prec, attention)] = [0.0, 0.0]
        for r in range(args.rounds):  # alternating: every precision once per round
            for key, (step, _) in steps.items():
                wall, cpu = timed(step, args.iters, args.warmup if r == 0 else 0)
                spent[key][0] += wall / args.rounds
                spent[key][1] += cpu / args.rounds
        for (prec, attention), (wall, cpu) in spent.items():
            calls = args.rounds * args.iters + args.warmup
            opt_ms = 1000 * steps[(prec, attention)][1][0] / calls
            note = f"AdamW({args.optimizer}) {opt_ms:.0f} ms wall" + (
                "; timm fused SDPA" if attention == "fused" else ""
            ) + (f"; {args.rounds} alternating rounds" if args.rounds > 1 else "")
            rows.append((f"train {prec}", args.train_batch / wall, args.train_batch / cpu, flops, note))
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            for (prec, attention), (step, _) in steps.items():
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    step()
                print(f"\n### one training step, {prec}, attention {attention} (self CPU time)\n")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
        model.config.attention = "auto"

    if "train" in parts and args.variants:
        names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
        if DEVICE.type != "cuda" and args.variants == "all":
            names.remove("cudagraph")
        del opt, params  # one model's optimiser state at a time
        g = torch.Generator().manual_seed(1)
        n_tok = model.num_patches
        noise = {s: torch.rand(args.train_batch, n_tok, generator=g).to(DEVICE) for s in model.sensors}
        b = batch(model, args.train_batch)
        adamw = dict(lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95))
        ref_loss, ref_weights = None, None
        for name in names:
            if DEVICE.type == "cuda":
                torch.cuda.empty_cache()  # a CUDA graph keeps its own memory pool
            try:
                step, first, weights = train_variant(name, args.model, b, noise, adamw)
                step_once = first == []
                if step_once:
                    step()
                state = list(weights().items())[::7]  # every 7th tensor: bounded memory
                after = {k: v.detach().float().cpu() for k, v in state if v.is_floating_point()}
                wall, cpu = timed(step, args.iters, args.warmup)
            except Exception as e:  # a variant that cannot run here is reported, not fatal
                rows.append((f"train bf16 [{name}]", float("nan"), float("nan"), flops, f"failed: {e}"[:160]))
                continue
            if ref_loss is None:
                ref_loss, ref_weights = first[0], after
                note = f"first loss {first[0]:.6f} (reference)"
            else:
                dw = max((after[k] - ref_weights[k]).abs().max().item() for k in ref_weights)
                rel = abs(first[0] - ref_loss) / abs(ref_loss)
                ok = rel < 1e-2 and dw < 1e-3
                note = f"first loss rel. diff {rel:.1e}, max weight diff after 1 step {dw:.1e}" + (
                    "" if ok else " **NOT within bf16 noise**"
                )
            bs = args.train_batch
            rows.append((f"train bf16 [{name}]", bs / wall, bs / cpu, flops, note))
            del step, weights, after

    if "embed" in parts:
        model.eval()
        b = batch(model, args.embed_batch)
        with torch.inference_mode():
            flops = count_flops(lambda: model.embed(batch(model, 2)), 2)
            for prec in precisions:
                ctx = autocast if prec == "bf16" else torch.no_grad

                def emb(ctx=ctx):
                    with ctx():
                        run_model.embed(b) if not args.compile else run_model(b)

                wall, cpu = timed(emb, args.iters, args.warmup)
                rows.append((f"embed {prec}", args.embed_batch / wall, args.embed_batch / cpu, flops, ""))
            wanted = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
            if args.variants and "bf16params" in wanted:
                # the same weights with bf16 Linear/Conv parameters (no autocast weight casts per batch),
                # timed in alternating rounds with the autocast-over-fp32 model
                low = copy.deepcopy(model)
                cast_matmul_weights(low)
                with autocast():
                    ref, got = model.embed(b), low.embed(b)
                diff = max((ref[s].float() - got[s].float()).abs().max().item() for s in ref)
                times: dict[str, list[tuple[float, float]]] = {"base": [], "bf16params": []}
                for _ in range(2):
                    for name, m in (("base", model), ("bf16params", low)):
                        def emb2(m=m):
                            with autocast():
                                m.embed(b)
                        times[name].append(timed(emb2, args.iters, args.warmup))
                for name, ts in times.items():
                    wall = sum(t[0] for t in ts) / len(ts)
                    cpu = sum(t[1] for t in ts) / len(ts)
                    note = "alternating rounds"
                    if name != "base":
                        note += f"; max descriptor diff vs base {diff:.1e}"
                    eb = args.embed_batch
                    rows.append((f"embed bf16 [{name}]", eb / wall, eb / cpu, flops, note))

    print(
        f"\nmodel {args.model}, train batch {args.train_batch}, embed batch {args.embed_batch}, "
        f"{torch.get_num_threads()} threads, iters {args.iters} (+{args.warmup} warm-up), "
        f"compile={args.compile}, torch {torch.__version__}, device {device_name()}\n"
    )
    print(
        "Wall = elapsed time (shared machine: other jobs slow it down). CPU = samples per CPU-second x "
        "threads: the rate this process got per core it actually ran on, ~ a quiet machine.\n"
    )
    print(
        "| measurement | samples/s wall | samples/s CPU | GFLOP/sample | TFLOP/s CPU | % of bf16 matmul "
        "| % of own precision's matmul | notes | reference impl. |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    bf16_cpu = rates["bf16"][1]
    for p in ("bf16", "fp32"):
        wall, cpu = rates[p]
        print(
            f"| matmul {p} | {wall / 1e12:.3f} TFLOP/s | - | - | {cpu / 1e12:.3f} | "
            f"{100 * cpu / bf16_cpu:.0f} % | 100 % | | {REFERENCE[f'matmul {p}']} |"
        )
    for name, sps_wall, sps_cpu, flops, note in rows:
        achieved = sps_cpu * flops
        own = rates["bf16" if "bf16" in name else "fp32"][1]
        ref = "" if args.demo else REFERENCE.get(name, "")
        print(
            f"| {name} | {sps_wall:.2f} | {sps_cpu:.2f} | {flops / 1e9:.1f} | {achieved / 1e12:.3f} | "
            f"{100 * achieved / bf16_cpu:.0f} % | {100 * achieved / own:.0f} % | {note} | {ref} |"
        )
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
