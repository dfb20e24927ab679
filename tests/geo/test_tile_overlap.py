"""``csmae tile`` of neighbouring tiles of one datatake: the same ground, date and sensor kept once.

The reference is brute force and independent of the tiler: each tile's patches as UTM boxes from the
fixture's own origins (shapely), their places by :func:`csmae.geo.place_of` of the boxes' lon/lat
corners (checked against the cell of the UTM centre), their valid pixels counted from the fixture's
holes, the distance of each centre to its tile's boundary by shapely, and the choice made from those.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.geo.tile_fixtures import AREA, Tile, reference_patches, write_neighbour_tiles


@pytest.fixture(scope="module")
def neighbours(tmp_path_factory) -> dict:
    return write_neighbour_tiles(tmp_path_factory.mktemp("neighbours"))


def _reference(tiles: list[Tile], crs, *, s1: bool, min_valid: float = 0.9) -> tuple[set, dict, dict]:
    """(kept ids, {dropped id: kept id}, {reason kind: count}) by the documented rule."""
    kept = [p for t in tiles for p in reference_patches(t, crs, s1=s1) if p["s2_valid"] >= min_valid * AREA]
    groups: dict[tuple, list[dict]] = {}
    for p in kept:
        groups.setdefault((p["place"], p["acquisition"]), []).append(p)
    dropped, why = {}, {"more valid pixels": 0, "farther from its scene's edge": 0, "scene name": 0}
    for group in groups.values():
        if len({p["scene"] for p in group}) < 2:
            continue
        assert len(group) == len({p["scene"] for p in group})  # one patch per tile and place here
        win = min(group, key=lambda p: (-p["valid"], -p["edge"], p["scene"]))
        for p in group:
            if p is not win:
                dropped[p["id"]] = win["id"]
                kind = ("more valid pixels" if p["valid"] != win["valid"] else
                        "farther from its scene's edge" if p["edge"] != win["edge"] else "scene name")
                why[kind] += 1
    return {p["id"] for p in kept} - set(dropped), dropped, why


def _skipped(store: Path) -> dict[str, str]:
    with open(store / "skipped.csv", newline="") as f:
        return {row["patch"]: row["reason"] for row in csv.DictReader(f)}


def test_overlapping_tiles_keep_each_place_once_whatever_the_argument_order(neighbours, tmp_path):
    from csmae.data.scenes import tile_scenes

    tiles, crs = neighbours["tiles"], neighbours["crs"]
    safes = [str(p) for p in neighbours["safe"]]
    a = tile_scenes(tmp_path / "a", s2=safes, s1=[str(neighbours["s1"])])
    b = tile_scenes(tmp_path / "b", s2=safes[::-1], s1=[str(neighbours["s1"])])
    kept, dropped, why = _reference(tiles, crs, s1=True)
    assert len(dropped) >= 10 and all(why.values())  # the fixture exercises every step of the rule
    table = pq.read_table(tmp_path / "a" / "pairs.parquet").to_pandas()
    assert set(table["id"]) == kept and len(table) == len(kept) == a.patches
    # each (place, sensor, date) once: S2 by the table's own columns
    assert not table.duplicated(["place", "datetime_s2"]).any()
    skipped = _skipped(tmp_path / "a")
    for gone, winner in dropped.items():
        assert skipped[gone].startswith(f"same ground as {winner} ")
    assert "--min-valid" in skipped["S2A_MSIL2A_20230613T101031_N0509_R022_T33UUP_r006_c003"]
    assert a.skipped == len(skipped) == len(dropped) + 1 and a.overlap_dropped == len(dropped)
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    overlap = man["tiling"]["overlap"]
    assert overlap["dropped"] == len(dropped) and overlap["kept_for"] == why
    assert overlap["acquisitions"] == {t.scene: ("2023-06-13T10:10:31Z" if "20230613" in t.product
                                                 else "2023-06-18T10:10:29Z") for t in tiles}
    # the one S1 scene is paired with both dates of T33UVP: its later pairs repeat S1 items
    first = {p for p in table.loc[~table["scene_s2"].str.startswith("S2B"), "place"]}
    assert overlap["repeated"] == {"s1": int(table.loc[table["scene_s2"].str.startswith("S2B"), "place"]
                                             .isin(first).sum())} and overlap["repeated"]["s1"] > 0
    # the other argument order: the same store, byte for byte (the manifest but for the paths given)
    for f in sorted(p.name for p in (tmp_path / "a").iterdir() if p.name != "manifest.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    mb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    for m in (man, mb):
        m.pop("created", None)
        m["tiling"].pop("seconds")
        m["source"]["paths"] = sorted(m["source"]["paths"])
    assert man == mb and b.overlap_dropped == a.overlap_dropped


def test_s2_alone_and_other_dates_are_not_merged(neighbours, tmp_path):
    """Without S1 the valid counts are S2's alone; the later pass of T33UVP repeats none of the first."""
    from csmae.data.scenes import tile_scenes

    tiles, crs = neighbours["tiles"], neighbours["crs"]
    res = tile_scenes(tmp_path / "s2", s2=[str(p) for p in neighbours["safe"]])
    kept, dropped, _ = _reference(tiles, crs, s1=False)
    table = pq.read_table(tmp_path / "s2" / "pairs.parquet").to_pandas()
    assert set(table["id"]) == kept and res.overlap_dropped == len(dropped)
    later = table[table["scene_s2"].str.startswith("S2B")]
    assert len(later) == 40  # every patch of the other date, though all its places are held on 2023-06-13
    skipped = _skipped(tmp_path / "s2")
    assert all(skipped[g].startswith(f"same ground as {w} ") for g, w in dropped.items())
