"""The same ground, date and sensor once in an index: duplicates found by place, sensor and acquisition.

An item duplicates another when both have the same place key (``place`` column,
:func:`csmae.geo.place.place_of`), the same sensor and the same acquisition
(:func:`csmae.geo.acquisition.acquisition_of` of the ``scene`` and ``datetime`` columns), and they come
from different scene grids. An item's grid is its id without the tiler's ``_r<row>_c<col>`` suffix
(``csmae tile`` names patches ``<scene>_rRRR_cCCC``); any other id is its own grid. Two items of one
grid are never duplicates: at a stride under 120 px several patches of one scene share a place, and
where a grid rotated in the next UTM zone puts two neighbours in one cell they are different ground.
Items without a place or an acquisition time are never duplicates.

:func:`find_duplicates` decides which new items to leave out of an index update:

- an item whose (place, sensor, acquisition) a live item of the index already holds (from another
  grid): the index keeps what it has (``csmae ingest`` of a later run, ``csmae index add``);
- among the new items, of one (place, sensor, acquisition) from several grids: the grid whose name
  sorts first (never the order of the rows or of the arguments).

``csmae tile`` of several scenes in one run chooses by the pixels instead (:mod:`csmae.data.scenes.overlap`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from csmae.geo.acquisition import acquisition_of

_TILE_ID = re.compile(r"^(.*)_r\d+_c\d+$")
#: duplicates named in a report (and in the index manifest)
EXAMPLES = 20


def grid_of(item_id: str) -> str:
    """The scene grid of an item id: ``<scene>`` of ``<scene>_rRRR_cCCC``, else the id itself."""
    m = _TILE_ID.match(str(item_id))
    return m.group(1) if m else str(item_id)


@dataclass
class Duplicates:
    """Which new rows to leave out, and which item each repeats."""

    drop: np.ndarray  # (N,) bool over the new rows
    examples: list[dict[str, str]] = field(default_factory=list)  # the first EXAMPLES dropped rows

    @property
    def count(self) -> int:
        return int(self.drop.sum())

    def record(self) -> dict[str, Any]:
        """The manifest entry: how many, and the first few (id, sensor, place, acquisition, kept id)."""
        return {"count": self.count, "examples": self.examples}


def _keys(sensors: Any, places: Any, scenes: Any, times: Any) -> list[tuple[str, str, str] | None]:
    """(place, sensor, acquisition) per row, None where the place or the acquisition is unknown."""
    acq: dict[tuple[Any, Any], str | None] = {}
    out: list[tuple[str, str, str] | None] = []
    for s, p, sc, t in zip(sensors, places, scenes, times, strict=True):
        if p is None or p != p:  # None / NaN
            out.append(None)
            continue
        k = (sc, t)
        if k not in acq:  # few distinct (scene, time): one name parse each
            acq[k] = acquisition_of(None if sc is None or sc != sc else str(sc), t)
        a = acq[k]
        out.append(None if a is None else (str(p), str(s), a))
    return out


def _column(table: Any, name: str, n: int) -> list[Any]:
    if table is None or name not in table:
        return [None] * n
    return list(table[name])


def find_duplicates(ids: Any, sensors: Any, meta: Any, existing: Any = None) -> Duplicates:
    """The new rows that repeat a (place, sensor, acquisition) (see the module docstring).

    Args:
        ids, sensors: the new rows' item ids and sensors (N each).
        meta: the new rows' ``place``, ``scene`` and ``datetime`` columns (a DataFrame, row order), or
            None (no geo columns: nothing is a duplicate).
        existing: the index's items (a DataFrame with ``id``, ``sensor``, ``place``, ``scene``,
            ``datetime`` and optionally ``live``; only live rows count), or None.
    """
    ids = [str(i) for i in ids]
    n = len(ids)
    drop = np.zeros(n, dtype=bool)
    if meta is None or n == 0 or "place" not in meta:
        return Duplicates(drop)
    import pandas as pd

    if existing is not None and len(existing) and "geometry" in existing and (
            "place" not in existing or existing["place"].isna().any()):  # written before the place column
        from csmae.geo.place import fill_places

        given = existing["place"] if "place" in existing else None
        existing = existing.assign(place=fill_places(given, list(existing["geometry"])))
    sensors = [str(x) for x in sensors]
    places = pd.Series(_column(meta, "place", n), dtype=object)
    old = None  # the index's live items at the new items' places: one pass over the index
    if existing is not None and len(existing) and "place" in existing:
        sel = existing["place"].isin(pd.unique(places.dropna())).to_numpy()
        if "live" in existing:
            sel = sel & existing["live"].to_numpy(dtype=bool)
        old = existing.loc[sel]
    # only rows that share a (place, sensor) with another new row or with the index can repeat one
    pairs = pd.DataFrame({"place": places, "sensor": sensors})
    maybe = pairs.duplicated(keep=False).to_numpy() & places.notna().to_numpy()
    if old is not None and len(old):
        maybe = maybe | places.isin(old["place"].to_numpy()).to_numpy()
    cand = np.flatnonzero(maybe).tolist()
    keys: list[tuple[str, str, str] | None] = [None] * n
    scenes, times = _column(meta, "scene", n), _column(meta, "datetime", n)
    for r, k in zip(cand, _keys([sensors[r] for r in cand], [places.iat[r] for r in cand],
                                [scenes[r] for r in cand], [times[r] for r in cand]), strict=True):
        keys[r] = k
    held: dict[tuple[str, str, str], tuple[set[str], str]] = {}  # key -> (grids, an item id holding it)
    new_ids = set(zip(ids, sensors, strict=True))
    if old is not None and len(old):
        old_keys = _keys(list(old["sensor"]), list(old["place"]), _column(old, "scene", len(old)),
                         _column(old, "datetime", len(old)))
        for i, s, k in sorted(zip(old["id"].astype(str), old["sensor"].astype(str), old_keys, strict=True),
                              key=lambda r: (r[0], r[1])):
            if k is None or (i, s) in new_ids:  # an (id, sensor) the update replaces does not hold its key
                continue
            held.setdefault(k, (set(), i))[0].add(grid_of(i))
    examples: list[dict[str, str]] = []

    def dropped(r: int, kept: str, where: str) -> None:
        drop[r] = True
        if len(examples) < EXAMPLES:
            k = keys[r]
            assert k is not None
            examples.append({"id": ids[r], "sensor": k[1], "place": k[0], "acquisition": k[2],
                             "kept": kept, "kept_in": where})

    fresh: dict[tuple[str, str, str], list[int]] = {}
    for r, k in enumerate(keys):
        if k is None:
            continue
        if k in held:
            have, first = held[k]
            if grid_of(ids[r]) not in have:
                dropped(r, first, "index")
            continue
        fresh.setdefault(k, []).append(r)
    for group in fresh.values():
        grids = sorted({grid_of(ids[r]) for r in group})
        if len(grids) < 2:
            continue
        kept = min(ids[r] for r in group if grid_of(ids[r]) == grids[0])
        for r in group:
            if grid_of(ids[r]) != grids[0]:
                dropped(r, kept, "update")
    return Duplicates(drop, examples)
