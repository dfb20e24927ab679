"""Reproducible subsets of BigEarthNet built from the side tables (no pixels read).

A subset is a filter over one table row per pair (country, season, official split, the recommended
exclusions) plus an optional maximum size drawn with a seed. :func:`build_subset` applies it and
:func:`write_subset` writes one names file per split (one pair id per line), ``all.txt`` and a
``subset.json`` describing the filter and the counts, so that the list can be rebuilt exactly.

Tables understood:
- the v1 tables folder (``s1_s2_name_country_season.csv.bz2``, ``train/val/test.csv.bz2`` and the
  three exclusion lists): ids are v1 S2 names;
- a reBEN ``metadata.parquet`` (its sibling ``metadata_for_patches_with_snow_cloud_or_shadow.parquet``
  is added when present): ids are v2 ``patch_id``. reBEN has no season column; the season is derived
  from the acquisition month (Dec-Feb winter, Mar-May spring, Jun-Aug summer, Sep-Nov fall), which
  agrees with the v1 table for all but ~0.1 % of pairs.

Presets (see :data:`PRESETS`):
- ``ben-14k``: Serbia + Summer with the recommended exclusions. The paper's exact BEN-14K list
  (14,832 pairs) is not public; this filter gives 14,717 pairs (7,699 / 3,482 / 3,536 in the
  official train / val / test splits), not 14,832.
- ``ben-270k``: the official 19-class train split (269,695 pairs) for training, with the official
  val (123,723) / test (125,866) splits for queries and archive.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}

V1_PAIRS_TABLE = "s1_s2_name_country_season.csv.bz2"
V1_EXCLUSIONS = {
    "snow": "patches_with_seasonal_snow.csv.bz2",
    "cloud": "patches_with_cloud_and_shadow.csv.bz2",
    "no_label": "patches_with_no_19_class_targets.csv.bz2",
}
REBEN_SNOW_CLOUD = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"

BEN14K_NOTE = (
    "The paper's exact BEN-14K list (14,832 pairs) is not public; this filter (Serbia + Summer, "
    "recommended exclusions) gives 14,717 pairs, not 14,832."
)


@dataclass(frozen=True)
class SubsetFilter:
    """A reproducible filter over the side table.

    Attributes:
        countries: keep only these countries (None = all).
        seasons: keep only these seasons (Spring, Summer, Fall, Winter; None = all).
        splits: keep only pairs of these official splits (None = all, including unsplit pairs).
        exclude_snow, exclude_cloud, exclude_no_label: the recommended exclusions.
        max_size: keep at most this many pairs, drawn uniformly with ``seed`` (None = all).
        seed: random seed of the ``max_size`` draw.
    """

    countries: tuple[str, ...] | None = None
    seasons: tuple[str, ...] | None = None
    splits: tuple[str, ...] | None = None
    exclude_snow: bool = True
    exclude_cloud: bool = True
    exclude_no_label: bool = True
    max_size: int | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


#: Named filters. ``ben-14k``: see :data:`BEN14K_NOTE`.
PRESETS: dict[str, SubsetFilter] = {
    "ben-14k": SubsetFilter(countries=("Serbia",), seasons=("Summer",)),
    "ben-270k": SubsetFilter(splits=SPLITS),
}


def _read_names(path: Path) -> list[str]:
    try:
        return pd.read_csv(path, header=None, names=["name"], dtype=str)["name"].str.strip().tolist()
    except pd.errors.EmptyDataError:  # an empty list (e.g. no excluded patches)
        return []


_SEASON_OF_MONTH = {12: "Winter", 1: "Winter", 2: "Winter", 3: "Spring", 4: "Spring", 5: "Spring",
                    6: "Summer", 7: "Summer", 8: "Summer", 9: "Fall", 10: "Fall", 11: "Fall"}


def load_v1_table(tables_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per v1 pair: id (S2 name), s1_name, country, season, split, snow, cloud, no_label."""
    tables = Path(tables_dir)
    pairs_path = tables / V1_PAIRS_TABLE
    if not pairs_path.is_file():
        raise FileNotFoundError(f"{tables}: no {V1_PAIRS_TABLE} (expected the v1 side tables folder)")
    df = pd.read_csv(pairs_path, dtype=str)
    missing = {"s1_name", "s2_name", "country", "season"} - set(df.columns)
    if missing:
        raise ValueError(f"{pairs_path}: missing columns {sorted(missing)}")
    df = df.rename(columns={"s2_name": "id"})
    split = pd.Series([None] * len(df), index=df.index, dtype=object)
    pos = pd.Series(np.arange(len(df)), index=df["id"].to_numpy())
    for name in SPLITS:
        path = tables / f"{name}.csv.bz2"
        if not path.is_file():
            log.warning("%s: no %s; pairs of that split get split=None", tables, path.name)
            continue
        names = _read_names(path)
        known = pos.reindex(names).dropna().astype(int).to_numpy()
        if len(known) != len(names):
            log.warning("%s: %d names not in %s", path, len(names) - len(known), V1_PAIRS_TABLE)
        split.iloc[known] = name
    df["split"] = split
    for key, fname in V1_EXCLUSIONS.items():
        path = tables / fname
        if not path.is_file():
            log.warning("%s: no %s; exclusion %r not applied", tables, fname, key)
            df[key] = False
            continue
        df[key] = df["id"].isin(set(_read_names(path)))
    return df[["id", "s1_name", "country", "season", "split", "snow", "cloud", "no_label"]]


def load_reben_table(metadata: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per reBEN pair (metadata.parquet + the snow/cloud table next to it when present)."""
    path = Path(metadata)
    if path.is_dir():
        path = path / "metadata.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no reBEN metadata.parquet")
    frames = [pd.read_parquet(path)]
    extra = path.parent / REBEN_SNOW_CLOUD
    if extra.is_file():
        frames.append(pd.read_parquet(extra))
    df = pd.concat(frames, ignore_index=True).drop_duplicates("patch_id")
    month = pd.to_numeric(df["patch_id"].str.split("_").str[2].str[4:6], errors="coerce")
    out = pd.DataFrame({
        "id": df["patch_id"].astype(str),
        "s1_name": df["s1_name"].astype(str),
        "country": df["country"].astype(str),
        "season": [_SEASON_OF_MONTH.get(int(m)) if m == m else None for m in month],
        "split": df["split"].map(_SPLIT_ALIASES).astype(object),
        "snow": df["contains_seasonal_snow"].astype(bool),
        "cloud": df["contains_cloud_or_shadow"].astype(bool),
        "no_label": df["labels"].map(lambda v: v is None or len(v) == 0),
    })
    return out.reset_index(drop=True)


def load_table(source: str | os.PathLike[str]) -> pd.DataFrame:
    """Side table from a v1 tables folder or a reBEN metadata.parquet (file or its folder)."""
    p = Path(source)
    if p.is_dir() and (p / V1_PAIRS_TABLE).is_file():
        return load_v1_table(p)
    if p.suffix == ".parquet" or (p.is_dir() and (p / "metadata.parquet").is_file()):
        return load_reben_table(p)
    raise FileNotFoundError(
        f"{p}: not a side table; expected the v1 tables folder (with {V1_PAIRS_TABLE}) "
        "or a reBEN metadata.parquet"
    )


def _norm_split(s: str) -> str:
    if s not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {s!r}; expected one of {list(SPLITS)}")
    return _SPLIT_ALIASES[s]


def _isin_ci(col: pd.Series, values: Sequence[str]) -> pd.Series:
    want = {v.lower() for v in values}
    return col.fillna("").str.lower().isin(want)


def build_subset(table: pd.DataFrame, filt: SubsetFilter) -> pd.DataFrame:
    """Rows of ``table`` kept by ``filt``, in table order."""
    keep = pd.Series(True, index=table.index)
    if filt.countries is not None:
        keep &= _isin_ci(table["country"], filt.countries)
        if not keep.any():
            log.warning("no pair in countries %s; known: %s", filt.countries, sorted(table.country.unique()))
    if filt.seasons is not None:
        keep &= _isin_ci(table["season"], filt.seasons)
    if filt.splits is not None:
        keep &= table["split"].isin([_norm_split(s) for s in filt.splits])
    if filt.exclude_snow:
        keep &= ~table["snow"]
    if filt.exclude_cloud:
        keep &= ~table["cloud"]
    if filt.exclude_no_label:
        keep &= ~table["no_label"]
    out = table[keep]
    if filt.max_size is not None and len(out) > filt.max_size:
        if filt.max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {filt.max_size}")
        rng = np.random.default_rng(filt.seed)
        pick = np.sort(rng.choice(len(out), size=filt.max_size, replace=False))
        out = out.iloc[pick]
    return out


def resolve_filter(preset: str | None = None, **overrides: Any) -> SubsetFilter:
    """A preset (or the all-pairs filter) with ``overrides`` applied (None values ignored)."""
    if preset is not None and preset not in PRESETS:
        raise KeyError(f"unknown subset preset {preset!r}; known: {sorted(PRESETS)}")
    base = PRESETS[preset] if preset else SubsetFilter()
    changes: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v)
                               for k, v in overrides.items() if v is not None}
    return replace(base, **changes)


def write_subset(
    rows: pd.DataFrame, out: str | os.PathLike[str], *, filt: SubsetFilter, source: str,
    preset: str | None = None, table_size: int | None = None,
) -> dict[str, Any]:
    """Write ``<split>.txt`` per split, ``all.txt`` and ``subset.json`` into ``out`` (atomically)."""
    out = Path(out)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    counts: dict[str, int] = {}
    files: dict[str, str] = {}
    groups = {s: rows[rows["split"] == s] for s in SPLITS}
    groups["unsplit"] = rows[rows["split"].isna()]
    for name, g in groups.items():
        if len(g) == 0 and name == "unsplit":
            continue
        (tmp / f"{name}.txt").write_text("".join(f"{i}\n" for i in g["id"]))
        counts[name] = len(g)
        files[name] = f"{name}.txt"
    (tmp / "all.txt").write_text("".join(f"{i}\n" for i in rows["id"]))
    counts["all"] = len(rows)
    files["all"] = "all.txt"
    info = {
        "kind": "csmae-subset",
        "version": 1,
        "preset": preset,
        "note": BEN14K_NOTE if preset == "ben-14k" else None,
        "source": str(source),
        "table_rows": table_size,
        "filter": filt.to_dict(),
        "counts": counts,
        "files": files,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (tmp / "subset.json").write_text(json.dumps(info, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return info


def make_subset(
    source: str | os.PathLike[str], out: str | os.PathLike[str], *, preset: str | None = None,
    table: pd.DataFrame | None = None, **overrides: Any,
) -> dict[str, Any]:
    """Load the side table, apply ``preset`` + ``overrides`` and write the subset folder."""
    filt = resolve_filter(preset, **overrides)
    tab = load_table(source) if table is None else table
    rows = build_subset(tab, filt)
    log.info("subset %s: %d of %d pairs", preset or "custom", len(rows), len(tab))
    return write_subset(rows, out, filt=filt, source=str(source), preset=preset, table_size=len(tab))


def read_names(path: str | os.PathLike[str]) -> list[str]:
    """Ids from a names file (one per line; blank lines and ``#`` comments ignored)."""
    lines = Path(path).read_text().splitlines()
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
