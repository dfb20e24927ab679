"""Build the real BigEarthNet pairs shipped with ``csmae demo`` (src/csmae/demo/assets/real_pairs/).

Reads every pair of the three real samples in ../shared/data (reBEN LMDB, v1 folders, encoded
LMDB) with the project's readers, keeps the bands at their native size and dtype (S1 VV/VH float32
dB 120x120; S2 B02 B03 B04 B08 uint16 120x120; B05 B06 B07 B8A B11 B12 uint16 60x60; exactly the
released values, recovered losslessly from the readers' samples) and writes one xz-compressed
``.npy`` per band group plus ``pairs.json`` (id, split, 19-class labels, source, metadata).

    .venv/bin/python scripts/build_demo_asset.py [--data ../shared/data] \
        [--out src/csmae/demo/assets/real_pairs]

Deterministic: the same inputs give byte-identical files. Licence of the data: CDLA-Permissive-1.0
(Copernicus Sentinel data); see src/csmae/demo/assets/NOTICE.md.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: (source label, paths relative to the data folder)
SOURCES = (
    ("reBEN (BigEarthNet v2.0) LMDB sample", ["reben/BigEarthNet-V2-LMDB"]),
    ("BigEarthNet v1.0 folders sample",
     ["bigearthnet-v1/BigEarthNet-v1.0", "bigearthnet-v1/BigEarthNet-S1-v1.0"]),
    ("BigEarthNet v1 encoded LMDB sample", ["bigearthnet-encoded-lmdb"]),
)


def _npy_xz(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)


def build(data: Path, out: Path) -> dict[str, int]:
    from csmae.data import open_dataset
    from csmae.data.store import plan_groups
    from csmae.data.store_write import records_from_sample
    from csmae.labels import LABELS_19
    from csmae.sensors import S1, get_sensor

    sensors = {"s1": S1, "s2": get_sensor("s2")}
    groups = plan_groups(sensors, "native")
    records: dict[str, list[np.ndarray]] = {g.name: [] for g in groups}
    pairs: list[dict[str, object]] = []
    seen: set[str] = set()
    for label, rel in SOURCES:
        ds = open_dataset(*[data / r for r in rel], sensors=("s1", "s2"))
        for i in range(len(ds)):
            smp = ds[i]
            if smp["id"] in seen:
                continue
            seen.add(smp["id"])
            for name, rec in records_from_sample(smp, groups, ds.sensors).items():
                records[name].append(rec)
            meta = {k: v for k, v in smp.items() if k not in ("id", "s1", "s2", "labels", "split")
                    and isinstance(v, (str, int, float, bool))}
            pairs.append({"id": smp["id"], "split": smp.get("split"),
                          "labels": [LABELS_19[j] for j in np.flatnonzero(smp["labels"])],
                          "source": label, **meta})
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sizes = {}
    for g in groups:
        arr = np.stack(records[g.name]).astype(g.dtype)  # (N, bands, side, side)
        (tmp / f"{g.name}.npy.xz").write_bytes(_npy_xz(arr))
        sizes[g.name] = (tmp / f"{g.name}.npy.xz").stat().st_size
    meta = {"kind": "csmae-demo-real-pairs", "version": 1, "layout": "native",
            "sensors": {k: s.to_dict() for k, s in sensors.items()},
            "groups": [g.to_dict() for g in groups], "pairs": pairs,
            "licence": "CDLA-Permissive-1.0 (Copernicus Sentinel data); see ../NOTICE.md",
            "built_by": "scripts/build_demo_asset.py"}
    (tmp / "pairs.json").write_text(json.dumps(meta, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {"pairs": len(pairs), **sizes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=REPO / "src" / "csmae" / "demo" / "assets" / "real_pairs")
    args = p.parse_args()
    info = build(args.data, args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v:,}" for k, v in info.items()))


if __name__ == "__main__":
    main()
