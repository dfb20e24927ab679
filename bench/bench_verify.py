"""Cost of the integrity checks: hashing speed, and loading an index / embeddings with and without them.

1. Hash throughput on 256 MiB in memory (best of 3): SHA-256, BLAKE2b, and xxHash3 when installed.
2. A 1M x 768 float32 exact index folder (3.07 GB index.faiss, written straight in FAISS's IndexFlat
   format, streamed, so building it needs little memory) and a BEN-scale embeddings folder
   (500k rows x 768, shards of 8,192 rows, written with csmae's shard writer). Each measurement runs
   in a fresh subprocess (no memoised digests): ``SearchIndex.load`` / ``load_embeddings`` with the
   manifest's checksums (verified) and with them removed (the unverified path), plus ``csmae verify``.
   The files were just written, so they are in the page cache: the numbers are warm-cache
   (hash-bound); on a cold disk both sides add the same read time.

    nice -n 5 python bench/bench_verify.py --work /tmp/bench-verify [--index-rows 1000000]
        [--emb-rows 500000] [--keep]

Peak RSS of every subprocess is printed (ru_maxrss). The big files are deleted at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def hash_speeds(mib: int = 256) -> dict[str, float]:
    data = os.urandom(mib << 20)
    makers = {"sha256": hashlib.sha256, "blake2b": hashlib.blake2b}
    try:
        import xxhash

        makers["xxh3_128 (xxhash, not used)"] = xxhash.xxh3_128
    except ImportError:
        pass
    out = {}
    for name, mk in makers.items():
        best = 1e9
        for _ in range(3):
            h = mk()
            t = time.perf_counter()
            for i in range(0, len(data), 4 << 20):
                h.update(data[i:i + (4 << 20)])
            best = min(best, time.perf_counter() - t)
        out[name] = len(data) / best / 1e9
    return out


def write_flat_index(folder: Path, n: int, d: int, seed: int = 0) -> None:
    """index.faiss (IndexFlatIP, L2-normalised random vectors) + items.parquet + manifest."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    from csmae.integrity import checksum_files
    from csmae.retrieval.artifacts import base_manifest

    folder.mkdir(parents=True)
    head = bytearray(faiss.serialize_index(faiss.IndexFlatIP(d)).tobytes())
    head[8:16] = np.int64(n).tobytes()  # ntotal
    head[-8:] = np.int64(n * d).tobytes()  # length of the float vector that follows
    rng = np.random.default_rng(seed)
    with open(folder / "index.faiss", "wb") as f:
        f.write(head)
        for lo in range(0, n, 50_000):
            x = rng.standard_normal((min(50_000, n - lo), d), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            f.write(x.tobytes())
    labels = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * 19) < 0.1), 19)
    pq.write_table(pa.table({
        "id": pa.array([f"p{i:07d}" for i in range(n)]), "sensor": pa.array(["s2"] * n),
        "split": pa.array(["test"] * n), "labels": labels}), folder / "items.parquet")
    man = base_manifest("csmae-index", dim=d, count=n, sensor_ranges={"s2": [0, n]}, index_kind="exact",
                        factory="Flat", search_params={})
    man["checksums"] = checksum_files(folder, ["index.faiss", "items.parquet"])
    (folder / "manifest.json").write_text(json.dumps(man))


def write_embeddings(folder: Path, n: int, d: int, shard_rows: int = 8192, seed: int = 0) -> None:
    from csmae.integrity import checksum_files
    from csmae.retrieval.artifacts import base_manifest
    from csmae.retrieval.embeddings import write_shard

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    shards = []
    for si, lo in enumerate(range(0, n, shard_rows)):
        m = min(shard_rows, n - lo)
        name = f"part-{si:05d}.parquet"
        write_shard(folder / name, ids=[f"p{(lo + i) // 2:07d}" for i in range(m)],
                    sensors=["s1", "s2"] * (m // 2) + ["s1"] * (m % 2), splits=["test"] * m,
                    labels=rng.random((m, 19)) < 0.1,
                    vectors=rng.standard_normal((m, d), dtype=np.float32))
        shards.append({"file": name, "rows": m, "pairs": m // 2})
    man = base_manifest("csmae-embeddings", dim=d, count=n, shards=shards, sensors={"s1": {}, "s2": {}})
    man["checksums"] = checksum_files(folder, [s["file"] for s in shards])
    (folder / "manifest.json").write_text(json.dumps(man))


def unverified_copy(folder: Path) -> Path:
    """The same folder without checksums in its manifest (hard links: no extra disk)."""
    dst = folder.with_name(folder.name + "-nosums")
    dst.mkdir()
    for p in folder.iterdir():
        if p.name != "manifest.json":
            os.link(p, dst / p.name)
    man = json.loads((folder / "manifest.json").read_text())
    man.pop("checksums")
    (dst / "manifest.json").write_text(json.dumps(man))
    return dst


CHILD = """
import resource, sys, time, logging
logging.disable(logging.WARNING)
import faiss, pandas, pyarrow.parquet, torch  # imports are not what is measured
import csmae.retrieval.index, csmae.retrieval.embeddings, csmae.cli.verify, csmae.data.base
what, path = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if what == "index":
    csmae.retrieval.index.SearchIndex.load(path)
elif what == "embeddings":
    csmae.retrieval.embeddings.load_embeddings(path)
else:
    assert csmae.cli.verify.verify_artefact(path).status == 0
dt = time.perf_counter() - t
print(f"{dt:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f}")
"""


def measure(what: str, path: Path, repeat: int = 3) -> tuple[float, float]:
    """Best wall time (s) of ``repeat`` fresh processes, and their peak RSS (GB)."""
    best, rss = 1e9, 0.0
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", CHILD, what, str(path)], check=True,
                             capture_output=True, text=True).stdout.split()
        best, rss = min(best, float(out[0])), max(rss, float(out[1]))
    return best, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-verify"))
    ap.add_argument("--index-rows", type=int, default=1_000_000)
    ap.add_argument("--emb-rows", type=int, default=500_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--keep", action="store_true", help="keep the written folders")
    args = ap.parse_args()
    for name, gbs in hash_speeds().items():
        print(f"hash {name:28s} {gbs:5.2f} GB/s")
    shutil.rmtree(args.work, ignore_errors=True)
    try:
        t = time.perf_counter()
        write_flat_index(args.work / "index", args.index_rows, args.dim)
        size = (args.work / "index" / "index.faiss").stat().st_size
        print(f"index: {args.index_rows} x {args.dim}, index.faiss {size / 1e9:.2f} GB "
              f"(written + checksummed in {time.perf_counter() - t:.1f} s)")
        plain = unverified_copy(args.work / "index")
        for label, what, path in (("load, no checks", "index", plain),
                                  ("load, verified", "index", args.work / "index"),
                                  ("csmae verify", "verify", args.work / "index")):
            s, rss = measure(what, path)
            print(f"  index {label:16s} {s:6.2f} s   peak RSS {rss:.2f} GB")
        shutil.rmtree(args.work / "index")
        shutil.rmtree(plain)
        t = time.perf_counter()
        write_embeddings(args.work / "emb", args.emb_rows, args.dim)
        size = sum(p.stat().st_size for p in (args.work / "emb").glob("*.parquet"))
        print(f"embeddings: {args.emb_rows} x {args.dim}, {size / 1e9:.2f} GB of shards "
              f"(written + checksummed in {time.perf_counter() - t:.1f} s)")
        plain = unverified_copy(args.work / "emb")
        for label, what, path in (("load, no checks", "embeddings", plain),
                                  ("load, verified", "embeddings", args.work / "emb"),
                                  ("csmae verify", "verify", args.work / "emb")):
            s, rss = measure(what, path)
            print(f"  embeddings {label:16s} {s:6.2f} s   peak RSS {rss:.2f} GB")
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    print(f"bench peak RSS (this process): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
