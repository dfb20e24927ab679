"""Peak memory of ``csmae embed`` and ``csmae evaluate`` through the CLI at two archive sizes (not a test).

Does RSS grow with the archive? Each command runs as a subprocess under :mod:`rss_peak` (peak of
VmRSS, RssAnon = what the process holds, RssFile = mapped file pages such as a memory-mapped store).

  # a synthetic embeddings folder: N pairs x 2 sensors, D floats, clustered unit-ish vectors
  python bench/bench_memory.py make-emb /tmp/emb400k --pairs 400000 --dim 768
  # csmae evaluate --embeddings on it, under the RSS sampler
  python bench/bench_memory.py evaluate /tmp/emb400k --out /tmp/rep400k [-- extra evaluate args]
  # csmae embed of a store with a saved model
  python bench/bench_memory.py embed MODEL STORE --out /tmp/e [-- extra embed args]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from rss_peak import run as run_sampled  # noqa: E402


def make_emb(out: Path, *, pairs: int, dim: int, shard_pairs: int, splits: tuple[float, float, float],
             seed: int = 0, clusters: int = 500) -> Path:
    """An embeddings folder of ``pairs`` pairs (s1 and s2 rows interleaved), written shard by shard."""
    from csmae.integrity import checksum_files
    from csmae.retrieval.artifacts import base_manifest, write_json_atomic
    from csmae.retrieval.embeddings import write_shard

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    cls_labels = rng.random((clusters, 19)) < 0.15
    out.mkdir(parents=True)
    entries = []
    names = np.array(["train", "val", "test"], dtype=object)
    for j, lo in enumerate(range(0, pairs, shard_pairs)):
        n = min(pairs, lo + shard_pairs) - lo
        c = rng.integers(0, clusters, n)
        v = np.empty((n, 2, dim), np.float32)
        for s in range(2):
            v[:, s] = centres[c] + rng.standard_normal((n, dim), dtype=np.float32) * 0.8
        lab = cls_labels[c] ^ (rng.random((n, 19)) < 0.05)
        sp = names[np.searchsorted(np.cumsum(splits), rng.random(n), side="right").clip(0, 2)]
        ids = [f"P{lo + i:08d}" for i in range(n)]
        write_shard(out / f"part-{j:05d}.parquet", ids=[i for i in ids for _ in range(2)],
                    sensors=["s1", "s2"] * n, splits=[s for s in sp for _ in range(2)],
                    labels=np.repeat(lab, 2, axis=0), vectors=v.reshape(2 * n, dim))  # fmt: skip
        entries.append({"file": f"part-{j:05d}.parquet", "pairs": n, "rows": 2 * n})
    from csmae.labels import LABELS_19

    man = base_manifest("csmae-embeddings", model={"name": "synthetic", "sha256": "0" * 64, "dim": dim},
                        sensors={"s1": {"bands": ["VV", "VH"]}, "s2": {"bands": ["B02"]}}, dim=dim,
                        label_names=list(LABELS_19), precision="fp32", count=2 * pairs, shards=entries,
                        checksums=checksum_files(out, [e["file"] for e in entries]))  # fmt: skip
    write_json_atomic(out / "manifest.json", man)
    return out


def _csmae() -> list[str]:
    return [sys.executable, "-c", "import sys; from csmae.cli import main; sys.exit(main())"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-emb")
    m.add_argument("out", type=Path)
    m.add_argument("--pairs", type=int, required=True)
    m.add_argument("--dim", type=int, default=768)
    m.add_argument("--shard-pairs", type=int, default=4096)
    m.add_argument("--splits", default="0.8,0.1,0.1")
    e = sub.add_parser("evaluate")
    e.add_argument("emb", type=Path)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("extra", nargs=argparse.REMAINDER)
    b = sub.add_parser("embed")
    b.add_argument("model", type=Path)
    b.add_argument("store", type=Path)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("extra", nargs=argparse.REMAINDER)
    a = p.parse_args()
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    if a.cmd == "make-emb":
        sp = tuple(float(x) for x in a.splits.split(","))
        make_emb(a.out, pairs=a.pairs, dim=a.dim, shard_pairs=a.shard_pairs, splits=sp)  # type: ignore[arg-type]
        print(f"wrote {a.out}")
        return 0
    extra = [x for x in a.extra if x != "--"]
    if a.cmd == "evaluate":
        shutil.rmtree(a.out, ignore_errors=True)
        cmd = [*_csmae(), "evaluate", "--embeddings", str(a.emb), "--out", str(a.out), "--grids", "0", *extra]
    else:
        shutil.rmtree(a.out, ignore_errors=True)
        cmd = [*_csmae(), "embed", str(a.model), str(a.store), "--out", str(a.out), *extra]
    res = run_sampled(cmd)
    print(json.dumps({"cmd": a.cmd, **res, "args": " ".join(cmd[3:])}), flush=True)
    return 0 if res["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
