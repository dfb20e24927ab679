"""Prepared-store benchmark: read throughput vs a reference-style pipeline, bytes/pair, prepare time.

Run: .venv/bin/python bench/bench_store.py [--n 1000] [--seconds 3] [--workdir DIR]

Candidates, all read at random indices from the page cache (every file is read once first):
- store float32  : csmae store (default layout), every band stored upsampled as float32 (no read-time work)
- store native   : csmae store, S2 uint16 at native resolution, bicubic upsampling at read time
- lmdb-safetensors: one LMDB value per pair = safetensors blob of native bands (the v2 authors'
                   format) decoded per sample + bicubic upsampling of the 20 m group + stacking
- reference      : the reference implementation's per-sample pipeline: an LMDB of pickled records
                   (copies of the real encoded-LMDB records), restricted unpickling, per-band bicubic
                   resize to 120x120 and per-band normalisation
Per-sample = ds[i] (+ normalisation where the pipeline has it), batched = get_batch(256 indices).
Workers = torch DataLoader, 2 workers, batch 256. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

REPO = Path(__file__).resolve().parents[1]
ENCODED = REPO.parent / "shared" / "data" / "bigearthnet-encoded-lmdb"
BATCH = 256


def du(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in Path(path).rglob("*") if f.is_file())


def warm(path: Path) -> None:
    for f in Path(path).rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def rate(fn, n_items: int, seconds: float) -> float:
    """items/s of fn() (each call handles n_items), repeated for at least `seconds`."""
    fn()  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        done += n_items
    return done / (time.perf_counter() - t0)


class LmdbSafetensors(Dataset):
    """Alternative store: LMDB of per-pair safetensors blobs of native bands."""

    def __init__(self, path: str, n: int, sensors):
        self.path, self.n, self.sensors, self.env = path, n, sensors, None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import lmdb
        from safetensors.numpy import load

        from csmae.data.base import upsample_stack

        if self.env is None:
            self.env = lmdb.open(self.path, readonly=True, lock=False, readahead=False)
        with self.env.begin() as txn:
            d = load(bytes(txn.get(f"{i:08d}".encode())))
        out = {s: upsample_stack([d[f"{s}/{b}"] for b in sen.bands]) for s, sen in self.sensors.items()}
        out["labels"] = d["labels"].astype(bool)
        return out


class ReferencePipeline(Dataset):
    """Reference-style: pickled records in LMDB, restricted unpickle, per-band resize, normalise."""

    def __init__(self, path: str, keys: list[str], sensors):
        self.path, self.keys, self.sensors, self.env = path, keys, sensors, None

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        import lmdb

        from csmae.data.encoded import decode_record

        if self.env is None:
            self.env = lmdb.open(self.path, readonly=True, lock=False, readahead=False)
        with self.env.begin() as txn:
            rec = decode_record(bytes(txn.get(self.keys[i].encode())), key=self.keys[i], path=self.path)
        out = {}
        for s, sen in self.sensors.items():
            chans = []
            for b, m, sd in zip(sen.bands, sen.mean, sen.std, strict=True):
                t = torch.from_numpy(rec[s][b].astype(np.float32))[None, None]
                if t.shape[-1] != 120:
                    t = F.interpolate(t, size=(120, 120), mode="bicubic", align_corners=True)
                chans.append((t[0, 0] - m) / sd)
            out[s] = torch.stack(chans)
        return out


def build_alternatives(store: Path, work: Path, sensors) -> tuple[LmdbSafetensors, ReferencePipeline]:
    import lmdb
    from safetensors.numpy import save

    from csmae.data.store import StoreDataset

    st = StoreDataset(store)
    n = len(st)
    arrays = {g: np.load(store / f"{g}.npy", mmap_mode="r") for g in ("s1", "s2_10m", "s2_20m")}
    groups = {g["name"]: g for g in st.manifest["groups"]}
    env = lmdb.open(str(work / "alt.lmdb"), map_size=1 << 34)
    with env.begin(write=True) as txn:
        for i in range(n):
            row = int(st._rows[i])
            d = {f"{groups[g]['sensor']}/{b}": np.ascontiguousarray(arrays[g][row, k])
                 for g in arrays for k, b in enumerate(groups[g]["bands"])}
            d["labels"] = st._labels[i].astype(np.uint8)
            txn.put(f"{i:08d}".encode(), save(d))
    env.close()
    # reference: copies of the 10 real encoded records under n keys
    src = lmdb.open(str(ENCODED / "BigEarthNetEncoded.lmdb"), readonly=True, lock=False)
    with src.begin() as txn:
        blobs = [bytes(v) for _, v in txn.cursor()]
    keys = [f"copy{i:08d}" for i in range(n)]
    env = lmdb.open(str(work / "ref.lmdb"), map_size=1 << 34)
    with env.begin(write=True) as txn:
        for i, k in enumerate(keys):
            txn.put(k.encode(), blobs[i % len(blobs)])
    env.close()
    alt = LmdbSafetensors(str(work / "alt.lmdb"), n, sensors)
    return alt, ReferencePipeline(str(work / "ref.lmdb"), keys,
                                                                                  sensors)


def per_sample(ds, rng, seconds, normalise=None):
    n = len(ds)

    def fn():
        for i in rng.integers(0, n, size=64):
            s = ds[int(i)]
            if normalise:
                normalise(s)
    return rate(fn, 64, seconds)


def batched(ds, rng, seconds):
    n = len(ds)
    return rate(lambda: ds.get_batch(rng.integers(0, n, size=BATCH)), BATCH, seconds)


def loader_rate(loader, seconds) -> float:
    it = iter(loader)
    next(it)  # workers started
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        x = b["s1"] if isinstance(b, dict) else b[0]["s1"]
        done += len(x) if isinstance(b, dict) else len(b)
    return done / (time.perf_counter() - t0)


def _collate_list(x):
    return x


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    from csmae.data.prepare import prepare
    from csmae.data.store import BatchedView, StoreDataset
    from csmae.data.synth import write_synthetic
    from csmae.sensors import S1, S2

    sensors = {"s1": S1, "s2": S2}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_store_"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"# data store bench: n={args.n}, torch threads={torch.get_num_threads()}, cpus={os.cpu_count()}")
    t = time.perf_counter()
    roots = write_synthetic(work / "v1", n=args.n, seed=0)
    t_synth = time.perf_counter() - t
    t = time.perf_counter()
    write_synthetic(work / "synth_store", n=args.n, seed=0, format="store")
    t_synth_store = time.perf_counter() - t
    t = time.perf_counter()
    f32 = prepare([str(p) for p in roots], work / "f32", layout="float32").path
    t_prep1 = time.perf_counter() - t
    t = time.perf_counter()
    prepare([str(p) for p in roots], work / "f32_2", layout="float32", workers=2)
    t_prep2 = time.perf_counter() - t
    t = time.perf_counter()
    native = prepare([str(p) for p in roots], work / "native", layout="native").path
    t_prep_native = time.perf_counter() - t
    alt, ref = build_alternatives(native, work, sensors)
    v1_bytes = du(work / "v1" / "BigEarthNet-v1.0") + du(work / "v1" / "BigEarthNet-S1-v1.0")
    for p in (native, f32, work / "alt.lmdb", work / "ref.lmdb"):
        warm(p)

    torch.set_num_threads(1)  # "single process": one process, one thread (workers also use one each)
    rng = np.random.default_rng(0)
    st_n, st_f = StoreDataset(native), StoreDataset(f32)

    def norm(s):
        for k, sen in sensors.items():
            sen.normalize(s[k])

    rows = []
    for name, ds, bytes_ in (("store float32 (default)", st_f, du(f32)), ("store native", st_n, du(native))):
        rows.append((name, per_sample(ds, rng, args.seconds), per_sample(ds, rng, args.seconds, norm),
                     batched(ds, rng, args.seconds), bytes_ / len(ds)))
    alt_bytes = du(work / "alt.lmdb") / args.n
    rows.append(("lmdb-safetensors", per_sample(alt, rng, args.seconds), None, None, alt_bytes))
    rows.append(("reference pipeline (pickle LMDB)", per_sample(ref, rng, args.seconds), None, None,
                 None))

    def w2(ds, batch_view=False):
        if batch_view:
            sampler = BatchSampler(RandomSampler(ds), BATCH, drop_last=True)
            dl = DataLoader(BatchedView(ds), batch_size=None, sampler=sampler, num_workers=2,
                            persistent_workers=True, prefetch_factor=4)
        else:
            dl = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=2, drop_last=True,
                            persistent_workers=True, prefetch_factor=4)
        return loader_rate(dl, 2 * args.seconds)

    workers = {
        "store float32 (default)": (w2(st_f), w2(st_f, True)),
        "store native": (w2(st_n), w2(st_n, True)),
        "lmdb-safetensors": (w2(alt), None),
        "reference pipeline (pickle LMDB)": (w2(ref), None),
    }
    ref1 = rows[-1][1]

    def f(x, fmt="{:,.0f}"):
        return "-" if x is None else fmt.format(x)

    print("\n| reader | per-sample ds[i] /s | + normalise /s | get_batch(256) /s | 2 workers, per-sample /s "
          "| 2 workers, batched /s | best vs reference (1 proc) | bytes/pair |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s, sn, b, by in rows:
        best = max(x for x in (s, b) if x is not None)
        print(f"| {name} | {f(s)} | {f(sn)} | {f(b)} | {f(workers[name][0])} | {f(workers[name][1])} | "
              f"{best / ref1:.1f}x | {f(by)} |")
    print(f"\n| prepare {args.n} pairs from synthetic v1 folders | seconds | pairs/s |\n|---|---|---|")
    print(f"| float32 layout, 1 process | {t_prep1:.1f} | {args.n / t_prep1:,.0f} |")
    print(f"| float32 layout, --workers 2 | {t_prep2:.1f} | {args.n / t_prep2:,.0f} |")
    print(f"| native layout, 1 process | {t_prep_native:.1f} | {args.n / t_prep_native:,.0f} |")
    kb = v1_bytes / args.n / 1e3
    print(f"\n`csmae synth` of {args.n} pairs: v1 folders {t_synth:.1f} s ({kb:,.0f} KB/pair on disk), "
          f"store {t_synth_store:.1f} s")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
