"""``open_dataset``: one entry point for every BigEarthNet form, auto-detected from the paths.

Source kinds (see docs/data-formats.md):

- ``v1``: the v1.0 S2 root and/or S1 root, in either order (or their parent folder);
- ``reben-folders``: a reBEN root with ``BigEarthNet-S2/`` and ``BigEarthNet-S1/`` (+ metadata.parquet);
- ``reben-lmdb``: the reBEN LMDB folder (+ metadata.parquet next to it or given as a source);
- ``encoded-lmdb``: the folder with ``BigEarthNetEncoded.lmdb`` + split csvs, or the ``.lmdb`` itself;
- ``store``: a prepared store (``csmae prepare``), opened by :mod:`csmae.data.store`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from csmae.data.base import DataError, PairedDataset
from csmae.data.records import read_ids_arg, read_split_arg
from csmae.sensors import Sensor, get_sensor

KNOWN_KINDS = ("v1 S2 root", "v1 S1 root", "reBEN folders root", "reBEN LMDB", "encoded LMDB",
               "prepared store", "metadata.parquet", "v1 tables folder")


def _store_module() -> Any:
    try:
        from csmae.data import store
    except ImportError:
        return None
    return store if hasattr(store, "is_store") else None


def classify(path: str | os.PathLike[str]) -> str:
    """Kind of one source path: ``"store"``, ``"encoded"``, ``"reben-lmdb"``, ``"reben-folders"``,
    ``"v1-s2"``, ``"v1-s1"``, ``"v1-parent"``, ``"metadata"``, ``"tables"``.

    Raises:
        DataError: the path does not exist, is empty or is of no known kind.
    """
    from csmae.data import encoded, reben, v1

    p = Path(path)
    if not p.exists():
        raise DataError("source not found", path=str(p))
    store = _store_module()
    if store is not None and store.is_store(p):
        return "store"
    if p.is_file():
        if p.suffix == ".parquet":
            return "metadata"
        raise DataError(f"unknown source kind (a file; expected one of: {', '.join(KNOWN_KINDS)})",
                        path=str(p))
    if encoded.locate(p) is not None:
        return "encoded"
    if reben.is_lmdb_dir(p):
        return "reben-lmdb"
    if reben.is_reben_folders(p):
        return "reben-folders"
    if (p / v1.PAIRS_TABLE).is_file():
        return "tables"
    kind = v1.root_kind(p)
    if kind:
        return f"v1-{kind}"
    if any(v1.root_kind(c) for c in _children(p) if c.name.startswith("BigEarthNet")):
        return "v1-parent"
    if not any(p.iterdir()):
        raise DataError("empty source (the folder has nothing in it)", path=str(p))
    raise DataError(f"unknown source kind; expected one of: {', '.join(KNOWN_KINDS)}", path=str(p))


def _children(p: Path) -> list[Path]:
    return sorted(c for c in p.iterdir() if c.is_dir())


def _sensors(sensors: Sequence[str], s2_bands: Any) -> dict[str, Sensor]:
    if isinstance(sensors, str):
        sensors = [sensors]
    names = [s.lower() for s in sensors]
    if not names or any(n not in ("s1", "s2") for n in names) or len(set(names)) != len(names):
        raise ValueError(f"sensors must be a non-empty subset of ('s1', 's2'), got {tuple(sensors)!r}")
    return {n: get_sensor(n, bands=s2_bands if n == "s2" else None) for n in ("s1", "s2") if n in names}


def open_dataset(
    *sources: str | os.PathLike[str],
    sensors: Sequence[str] | None = None,
    s2_bands: str | Sequence[str] | None = None,
    tables: str | os.PathLike[str] | None = None,
    split: str | Sequence[str] | None = None,
    ids: Iterable[str] | str | os.PathLike[str] | None = None,
    on_error: str = "raise",
) -> PairedDataset:
    """Open any BigEarthNet source as a :class:`PairedDataset`.

    Args:
        sources: path(s); the kind is detected (module docstring). v1 needs both roots for pairs.
        sensors: which sensors samples carry; a single-sensor dataset needs only that sensor's data.
            None (default): both, or for a prepared store every sensor it holds (a single-sensor
            store from ``csmae tile --s2`` / ``--s1`` opens as such).
        s2_bands: None (10 bands), ``"all"`` (12) or an ordered list of band names.
        tables: v1 side-table folder (pairing, country/season, official splits).
        split: keep only pairs of this split (or list of splits).
        ids: ids to keep (in this order), or a names file with one id per line.
        on_error: ``"raise"``: pairing/label/duplicate problems found at open time raise one
            :class:`DataError` naming them. ``"skip"``: those patches are dropped and listed in
            ``ds.problems`` as ``(patch_id, reason)``. Pixel problems (missing, truncated or
            non-TIFF band files, wrong shapes, NaN/inf) always raise when the patch is read;
            ``csmae prepare --on-error skip`` is where they are skipped and reported.

    Raises:
        DataError: unknown, missing or empty source; problems as described for ``on_error``.
    """
    from csmae.data import encoded, reben, v1

    if not sources:
        raise DataError("no source given")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    sens = _sensors(("s1", "s2") if sensors is None else sensors, s2_bands)
    id_list = read_ids_arg(ids)
    split_set = read_split_arg(split)
    kinds: dict[str, list[Path]] = {}
    for src in sources:
        p = Path(src)
        kind = classify(p)
        if kind == "v1-parent":
            for c in _children(p):
                k = v1.root_kind(c) if c.name.startswith("BigEarthNet") else None
                if k:
                    kinds.setdefault(f"v1-{k}", []).append(c)
            continue
        kinds.setdefault(kind, []).append(p)
    if "tables" in kinds:
        if tables is not None or len(kinds["tables"]) > 1:
            raise DataError("several v1 tables folders given")
        tables = kinds.pop("tables")[0]
    metadata = kinds.pop("metadata", [])
    data_kinds = {k.split("-")[0] if k.startswith("v1") else k for k in kinds}
    if not data_kinds:
        raise DataError("no dataset among the sources (only tables/metadata)",
                        path=", ".join(map(str, sources)))
    if len(data_kinds) > 1:
        raise DataError(f"sources of different kinds cannot be mixed: {sorted(kinds)}")
    for k, paths in kinds.items():
        if len(paths) > 1:
            raise DataError(f"more than one {k} source given: {[str(x) for x in paths]}")
    opts: dict[str, Any] = {"ids": id_list, "split": split_set, "on_error": on_error}
    (kind,) = data_kinds
    if kind == "v1":
        s2 = kinds.get("v1-s2", [None])[0]
        s1 = kinds.get("v1-s1", [None])[0]
        tables_dir = None if tables is None else Path(tables)
        return v1.open_v1(s2_root=s2, s1_root=s1, sensors=sens, tables=tables_dir, **opts)
    if metadata and kind not in ("reben-lmdb", "reben-folders"):
        raise DataError(f"metadata.parquet given with a {kind} source (only reBEN sources use it)")
    path = kinds[kind][0]
    if kind == "reben-lmdb":
        return reben.open_reben_lmdb(path, metadata=metadata, sensors=sens, **opts)
    if kind == "reben-folders":
        return reben.open_reben_folders(path, metadata=metadata, sensors=sens, **opts)
    if kind == "encoded":
        return encoded.open_encoded(path, sensors=sens, **opts)
    store = _store_module()
    chosen = None if sensors is None else tuple(sens)
    return store.StoreDataset(path, sensors=chosen, ids=id_list, split=split,  # type: ignore[no-any-return]
                              s2_bands=s2_bands)
