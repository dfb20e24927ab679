"""Neighbouring tiles of one datatake through ``csmae ingest`` and ``csmae index add``: the second
tile adds no ground, date and sensor that the index already holds.

Reference (brute force, independent of :mod:`csmae.retrieval.dedupe`): each index item's cell from
its footprint projected back to UTM 33N (shapely centroid), its sensor and its acquisition time; the
expected counts from the fixture's own description of the tiles (tests/geo/tile_fixtures.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.geo.tile_fixtures import AREA, reference_patches, write_neighbour_tiles


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict:
    from tests.retrieval.conftest import save_tiny

    tmp = tmp_path_factory.mktemp("overlap-ingest")
    fx = write_neighbour_tiles(tmp / "scenes")
    a, b = fx["safe"][:2]  # T33UUP and T33UVP of one datatake
    patches = [reference_patches(t, fx["crs"], s1=True) for t in fx["tiles"][:2]]
    kept = [[p for p in ps if p["s2_valid"] >= 0.9 * AREA] for ps in patches]
    shared = {p["place"] for p in kept[0]} & {p["place"] for p in kept[1]}
    return {"a": a, "b": b, "s1": fx["s1"], "model": save_tiny(tmp / "model"), "tmp": tmp,
            "kept": [len(k) for k in kept], "shared": len(shared)}


def _ingest(sc: dict, index: Path, *safes: Path) -> int:
    from csmae.cli import main

    return main(["ingest", *map(str, safes), str(sc["s1"]), "--model", str(sc["model"]),
                 "--index", str(index), "--precision", "fp32", "--device", "cpu"])


def _keys(index: Path) -> list[tuple[str, str, str]]:
    """(cell, sensor, acquisition time) of every live item, computed from its footprint and datetime."""
    import shapely
    from pyproj import Transformer

    from csmae.retrieval.index import SearchIndex

    items = SearchIndex.load(index).items
    items = items[items["live"]]
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    out = []
    for wkb, sensor, when in zip(items["geometry"], items["sensor"], items["datetime"], strict=True):
        ring = shapely.get_coordinates(shapely.from_wkb(wkb))
        x, y = to_utm.transform(ring[:, 0], ring[:, 1])
        c = shapely.Polygon(np.column_stack([x, y])).centroid
        out.append((f"{int(c.x // 1200)}-{int(c.y // 1200)}", sensor, when.strftime("%Y%m%dT%H%M%S")))
    return out


def _content(index: Path) -> dict:
    from csmae.retrieval.index import SearchIndex

    si = SearchIndex.load(index)
    rows = np.arange(si.backend.n_rows, dtype=np.int64)
    return {"ids": list(zip(si.items["id"], si.items["sensor"], si.items["live"], strict=True)),
            "vectors": si.backend.reconstruct(rows),
            "ingested": [(r["scene"], r["digest"], r["patches"], r["duplicates"]["count"])
                         for r in si.manifest["ingested"]]}


@pytest.fixture(scope="module")
def one_after_the_other(scenes) -> Path:
    """T33UUP ingested, then T33UVP in a second run."""
    index = scenes["tmp"] / "seq-index"
    assert _ingest(scenes, index, scenes["a"]) == 0
    assert _ingest(scenes, index, scenes["b"]) == 0
    return index


def test_the_second_tile_adds_no_ground_the_index_holds(scenes, one_after_the_other, capsys):
    from csmae.cli import main
    from csmae.retrieval.index import SearchIndex

    index = one_after_the_other
    n_a, n_b = scenes["kept"]
    dup = 2 * scenes["shared"]  # the shared places, S2 and S1 each
    assert scenes["shared"] >= 10
    keys = _keys(index)
    assert len(keys) == len(set(keys)) == 2 * n_a + 2 * n_b - dup  # each ground, sensor and date once
    man = SearchIndex.load(index).manifest
    rec = {r["scene"]: r for r in man["ingested"]}
    b_rec = rec["S2A_MSIL2A_20230613T101031_N0509_R022_T33UVP"]
    assert b_rec["patches"] == n_b and b_rec["duplicates"]["count"] == dup
    assert rec["S2A_MSIL2A_20230613T101031_N0509_R022_T33UUP"]["duplicates"]["count"] == 0
    for d in b_rec["duplicates"]["examples"]:  # each names the item kept: the T33UUP patch of that place
        assert d["id"].startswith("S2A_MSIL2A_20230613T101031_N0509_R022_T33UVP_")
        assert d["kept"].startswith("S2A_MSIL2A_20230613T101031_N0509_R022_T33UUP_")
        assert d["kept_in"] == "index"
    assert man["updates"][-1]["duplicates"] == dup and man["updates"][-1]["duplicates_added"] == 0
    # a rerun of the second tile: already ingested, nothing changes
    before = (index / "manifest.json").read_bytes()
    capsys.readouterr()
    assert _ingest(scenes, index, scenes["b"]) == 0
    assert "already ingested" in capsys.readouterr().out
    assert (index / "manifest.json").read_bytes() == before
    # a search over everything returns no ground twice
    si = SearchIndex.load(index)
    first = str(si.items["id"].iloc[0])
    assert main(["search", str(index), "--id", first, "--sensor", "s2", "--target", "any", "--k", "200",
                 "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    seen = [(h["place"], h["sensor"], h["datetime"]) for h in hits]
    assert len(hits) == len(keys) - 1 and len(seen) == len(set(seen))  # every item but the query


def test_the_second_tile_ingest_says_what_it_left_out(scenes, tmp_path, capsys):
    assert _ingest(scenes, tmp_path / "fresh", scenes["a"]) == 0
    capsys.readouterr()
    assert _ingest(scenes, tmp_path / "fresh", scenes["b"]) == 0
    out = capsys.readouterr().out
    dup = 2 * scenes["shared"]
    assert re.search(rf"T33UVP: ingested {scenes['kept'][1]} patches; {dup} items not added again: the same "
                     r"place, sensor and acquisition is in the index already", out), out


def test_one_run_in_either_order_gives_the_same_index(scenes, one_after_the_other, tmp_path):
    ab, ba = tmp_path / "ab", tmp_path / "ba"
    assert _ingest(scenes, ab, scenes["a"], scenes["b"]) == 0
    assert _ingest(scenes, ba, scenes["b"], scenes["a"]) == 0
    ref = _content(one_after_the_other)
    for index in (ab, ba):
        got = _content(index)
        assert got["ids"] == ref["ids"] and got["ingested"] == ref["ingested"]
        np.testing.assert_allclose(got["vectors"], ref["vectors"], atol=1e-6)


@pytest.fixture(scope="module")
def embedded(scenes) -> Path:
    """Each tile (with the S1 scene) tiled into its own store and embedded: emb_a, emb_b."""
    from csmae.cli import main

    root = scenes["tmp"] / "apart"
    for name in ("a", "b"):
        assert main(["tile", "--s2", str(scenes[name]), "--s1", str(scenes["s1"]), "--out",
                     str(root / f"store_{name}")]) == 0
        assert main(["embed", str(scenes["model"]), str(root / f"store_{name}"), "--out",
                     str(root / f"emb_{name}"), "--precision", "fp32", "--device", "cpu"]) == 0
    return root


def test_index_add_of_two_separately_tiled_stores(scenes, one_after_the_other, embedded, tmp_path, capsys):
    from csmae.cli import main
    from csmae.retrieval.index import SearchIndex

    dup = 2 * scenes["shared"]
    for idx, extra in (("drop", []), ("keep", ["--keep-duplicates"])):
        assert main(["index", str(embedded / "emb_a"), "--out", str(tmp_path / idx)]) == 0
        capsys.readouterr()
        assert main(["index", "add", str(tmp_path / idx), str(embedded / "emb_b"), *extra]) == 0
        out = capsys.readouterr().out
        assert f"{dup} items repeat the same place, sensor and acquisition as items of another scene" in out
        assert ("added anyway" if extra else "not added") in out
    # dropped: the same items as csmae ingest of the two tiles; kept: every patch, the repeats reported
    want = [(i, s) for i, s, live in _content(one_after_the_other)["ids"] if live]
    got = SearchIndex.load(tmp_path / "drop").items
    assert list(zip(got["id"], got["sensor"], strict=True)) == want
    kept = _keys(tmp_path / "keep")
    assert len(kept) == 2 * sum(scenes["kept"]) and len(kept) - len(set(kept)) == dup
    from csmae.cli.index import _say_duplicates

    _say_duplicates(SearchIndex.load(tmp_path / "keep"))  # what `csmae index` says of such a build
    assert f"note: {dup} items repeat the same place" in capsys.readouterr().out
    # a build takes no --keep-duplicates (it keeps what it is given, and says so)
    assert main(["index", str(embedded / "emb_a"), "--out", str(tmp_path / "x"), "--keep-duplicates"]) == 1
    assert "--keep-duplicates" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_index_add_into_a_milvus_archive_leaves_the_repeats_out_too(scenes, embedded, tmp_path, capsys):
    """A Milvus archive (Lite here; the same code path on a server) is checked against its items."""
    from csmae.cli import main

    uri = str(tmp_path / "archive.db")
    assert main(["index", str(embedded / "emb_a"), "--out", str(tmp_path / "m"), "--backend", "milvus",
                 "--uri", uri]) == 0
    capsys.readouterr()
    assert main(["index", "add", str(tmp_path / "m"), str(embedded / "emb_b")]) == 0
    dup = 2 * scenes["shared"]
    assert f"{dup} items repeat the same place" in capsys.readouterr().out
    keys = _keys(tmp_path / "m")
    assert len(keys) == len(set(keys)) == 2 * sum(scenes["kept"]) - dup


def test_a_reprocessed_copy_of_an_ingested_tile_adds_nothing_and_is_recorded(scenes, tmp_path, capsys):
    """The same datatake under another processing baseline: every item is already there."""
    import shutil

    from csmae.retrieval.index import SearchIndex

    a = scenes["a"]
    again = shutil.copytree(a, tmp_path / a.name.replace("_N0509_", "_N0510_").replace("20230613T141227",
                                                                                       "20230701T080000"))
    index = tmp_path / "idx"
    assert _ingest(scenes, index, a) == 0
    count = SearchIndex.load(index).manifest["count"]
    assert _ingest(scenes, index, again) == 0
    man = SearchIndex.load(index).manifest
    rec = man["ingested"][-1]
    assert rec["scene"].endswith("_N0510_R022_T33UUP") and rec["duplicates"]["count"] == 2 * scenes["kept"][0]
    assert man["count"] == count  # nothing added ...
    capsys.readouterr()
    assert _ingest(scenes, index, again) == 0  # ... and recorded: a rerun skips it
    assert "already ingested" in capsys.readouterr().out
