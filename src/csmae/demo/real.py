"""The real BigEarthNet pairs shipped in ``assets/real_pairs`` (see assets/NOTICE.md).

:func:`write_real_store` unpacks them into a prepared store (layout "native"), which every csmae
tool reads (``open_dataset``, ``csmae embed``, ``csmae serve --data``).
"""

from __future__ import annotations

import io
import json
import lzma
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

ASSET = "real_pairs"
NOTICE = "NOTICE.md"


def asset_dir() -> Path:
    """The folder of the shipped pairs inside the installed package."""
    return Path(str(resources.files("csmae.demo") / "assets" / ASSET))


def notice_text() -> str:
    return (Path(str(resources.files("csmae.demo") / "assets")) / NOTICE).read_text()


def load_real_pairs(
    path: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(pairs.json content, {group: (N, bands, side, side) native records}) of the shipped pairs.

    Raises:
        FileNotFoundError: the asset is missing (a broken installation: reinstall csmae).
    """
    root = Path(path) if path is not None else asset_dir()
    meta_path = root / "pairs.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"the demo's real samples are missing ({meta_path}); reinstall csmae")
    meta = json.loads(meta_path.read_text())
    records = {}
    n = len(meta["pairs"])
    for g in meta["groups"]:
        f = root / f"{g['name']}.npy.xz"
        arr = np.load(io.BytesIO(lzma.decompress(f.read_bytes())), allow_pickle=False)
        want = (n, len(g["bands"]), g["side"], g["side"])
        if arr.shape != want or arr.dtype != np.dtype(g["dtype"]):
            raise ValueError(f"{f} holds {arr.dtype} {arr.shape}, expected {g['dtype']} {want}")
        records[g["name"]] = arr
    return meta, records


def write_real_store(out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Unpack the shipped real pairs into a prepared store at ``out`` (atomically); returns ``out``."""
    from csmae.data.store import ArrayGroup
    from csmae.data.store_write import pair_entry, write_store
    from csmae.labels import multi_hot
    from csmae.sensors import Sensor

    meta, records = load_real_pairs()
    sensors = {k: Sensor.from_dict(v) for k, v in meta["sensors"].items()}
    groups = [ArrayGroup.from_dict(g) for g in meta["groups"]]
    entries = []
    for row, p in enumerate(meta["pairs"]):
        sample = {k: v for k, v in p.items() if k != "labels"}
        sample["labels"] = multi_hot(p["labels"])
        entries.append(pair_entry(sample, row, list(sensors)))
    source = {"demo_asset": "csmae/demo/assets/real_pairs",
              "licence": "CDLA-Permissive-1.0 (Copernicus Sentinel data), see csmae/demo/assets/NOTICE.md"}
    return write_store(out, sensors=sensors, groups=groups, records=records, entries=entries, layout="native",
                       source=source, producer="csmae demo", overwrite=overwrite)
