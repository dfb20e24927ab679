"""Training batch assembly in one loader worker: read + normalise + flips of a whole batch.

    .venv/bin/python bench/bench_loader.py --data STORE [--batch 512] [--seconds 20]

Times ``BatchDataset.__getitem__`` (what each DataLoader worker runs per batch) on a prepared store,
with the random flips on, in one process with one torch thread (as in a worker), alternating with
the earlier implementation kept here as the baseline (fresh tensors for the normalisation, flips by
``torch.where`` over the whole batch); both must give the same batch. On a GPU machine the workers'
rate bounds training (bench/README.md, ``## GPU``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from csmae.data import open_dataset
from csmae.models import create_model, normalize_batch
from csmae.training.datamodule import BatchDataset
from csmae.training.sample_rng import flip_draws, sample_keys
from csmae.training.sampler import BatchRequest


def earlier_getitem(ds: BatchDataset, request: BatchRequest) -> dict:
    raw = ds.raw_batch(request.positions)
    batch = dict(normalize_batch({s: raw[s] for s in ds.sensors}, ds.sensors))
    flips = flip_draws(request.keys)
    for s in ds.sensors:
        x = torch.where(flips[:, 0, None, None, None], batch[s].flip(-1), batch[s])
        x = torch.where(flips[:, 1, None, None, None], x.flip(-2), x)
        batch[s] = x.contiguous()
    return batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sensors = create_model("csmae_sesd_tiny").sensors
    ds = BatchDataset(open_dataset(args.data), sensors, hflip=True, vflip=True)
    rng = np.random.default_rng(0)

    def request(i: int) -> BatchRequest:
        pos = sorted(rng.choice(len(ds), args.batch, replace=False).tolist())
        return BatchRequest(pos, sample_keys(0, i, range(len(pos))), len(pos))

    first = request(0)
    new, old = ds[first], earlier_getitem(ds, first)  # also warms the page cache
    assert all(torch.equal(new[s], old[s]) for s in sensors), "the two implementations differ"
    variants = {"read only (raw_batch)": lambda r: ds.raw_batch(r.positions),
                "earlier: fresh tensors + torch.where flips": lambda r: earlier_getitem(ds, r),
                "current: in place (BatchDataset)": lambda r: ds[r]}
    spent = dict.fromkeys(variants, 0.0)
    rounds, i = 0, 1
    while sum(spent.values()) < args.seconds or rounds < 3:
        req = request(i)
        for name, fn in variants.items():
            t = time.perf_counter()
            fn(req)
            spent[name] += time.perf_counter() - t
        rounds, i = rounds + 1, i + 1
    print(f"batch {args.batch}, {rounds} alternating rounds, 1 torch thread, one process")
    print("| batch assembly | ms per batch | samples/s |")
    print("|---|---:|---:|")
    for name, t in spent.items():
        print(f"| {name} | {1000 * t / rounds:.0f} | {args.batch * rounds / t:.0f} |")


if __name__ == "__main__":
    main()
