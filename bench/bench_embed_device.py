"""Embedding end to end (``embed_dataset``: store read, transfer, normalise, model) vs the model alone.

Issue 13.3's embedding figure, side by side in one process: ``embed_dataset`` on a prepared store
with the host data path (``device_transforms=False``: float32 batches upsampled and assembled by the
reader) and the device path (``True``: the store's records as stored, upsampled and normalised on
the device), then ``model.embed`` alone on random inputs already on the device, same batch and
precision. Start-up (model load, first batch) is excluded from the end-to-end rates.

    python bench/bench_embed_device.py --device cuda --n 8192 --batch-size 512 --workers 8
    .venv/bin/python bench/bench_embed_device.py --model csmae_sesd_tiny --n 64 --batch-size 16   # smoke
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def model_alone(model_dir: str, batch: int, precision: str, device: str, iters: int) -> float:
    """Pairs/s of ``model.embed`` (both sensors) on random normalised inputs already on the device."""
    import csmae

    model = csmae.from_pretrained(model_dir, map_location=device).eval()
    if precision == "bf16":  # as embed_dataset holds it
        from csmae.models.precision import cast_matmul_weights

        cast_matmul_weights(model)
    x = {s: torch.randn(batch, sp.num_channels, 120, 120, device=device) for s, sp in model.sensors.items()}
    dev_type = torch.device(device).type

    def run() -> None:
        with torch.inference_mode(), torch.autocast(dev_type, torch.bfloat16, enabled=precision == "bf16"):
            model.embed(x)

    for _ in range(2):
        run()
    if dev_type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        run()
    if dev_type == "cuda":
        torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="csmae_sesd_base")
    ap.add_argument("--n", type=int, default=4096, help="pairs in the synthetic store")
    ap.add_argument("--data", help="an existing prepared store (default: a synthetic native-layout one)")
    ap.add_argument("--layout", choices=["native", "float32"], default="native")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--modes", default="false,true", help="device_transforms settings to run")
    ap.add_argument("--iters", type=int, default=10, help="model-alone batches")
    args = ap.parse_args()

    import csmae
    from csmae.data.synth import write_synthetic
    from csmae.retrieval.embed import embed_dataset

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = (
            [args.data]
            if args.data
            else write_synthetic(
                f"{tmp}/store", n=args.n, seed=0, format="store", s2_bands=None, layout=args.layout
            )
        )
        t_synth = time.perf_counter() - t0
        torch.manual_seed(0)
        csmae.create_model(args.model).save_pretrained(f"{tmp}/model")
        dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        store = args.data or f"synthetic {args.layout}, {args.n} pairs ({t_synth:.0f} s)"
        print(
            f"\n{args.model}, store {store}, "
            f"batch {args.batch_size}, {args.precision}, {args.workers} reader worker(s), device {dev_name}, "
            f"torch {torch.__version__}\n"
        )
        print("| path | pairs/s | share of model alone |")
        print("|---|---:|---:|")
        rows = []
        for mode in args.modes.split(","):
            marks: list[tuple[float, int]] = []
            embed_dataset(
                f"{tmp}/model",
                paths,
                f"{tmp}/emb-{mode}",
                batch_size=args.batch_size,
                precision=args.precision,
                workers=args.workers,
                device=args.device,
                device_transforms=mode == "true",
                on_progress=lambda d, _n, m=marks: m.append((time.perf_counter(), d)),
            )
            (t_a, d_a), (t_b, d_b) = marks[1], marks[-1]  # from the first finished batch on
            rows.append((f"end to end, device_transforms={mode}", (d_b - d_a) / (t_b - t_a)))
        alone = model_alone(f"{tmp}/model", args.batch_size, args.precision, args.device, args.iters)
        for name, rate in rows:
            print(f"| {name} | {rate:.1f} | {100 * rate / alone:.0f} % |", flush=True)
        print(f"| model alone (inputs on the device) | {alone:.1f} | 100 % |")


if __name__ == "__main__":
    main()
