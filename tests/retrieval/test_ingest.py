"""``csmae ingest``: scenes -> the same index as tile + embed + index/add by hand; idempotent; a real
kill -9 at each stage, then a rerun, gives the index of an uninterrupted run; other models refused.

Scenes: scripts/make_example_scene.py (a small L2A .SAFE + an S1 scene on another grid) and a copy
of its SAFE under a later product name (a second acquisition of the same tile).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
LATER = ("20230613T101031", "20230703T101031")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    from tests.example_scene import example_scene_script
    from tests.retrieval.conftest import save_tiny

    tmp = tmp_path_factory.mktemp("ingest")
    mod = example_scene_script()
    mod.make(tmp / "scenes", rows=2, cols=2)
    safe = next((tmp / "scenes").glob("*.SAFE"))
    later = shutil.copytree(safe, safe.with_name(safe.name.replace(*LATER)))
    return {"safe": safe, "later": later, "s1": tmp / "scenes" / "s1", "model": save_tiny(tmp / "model"),
            "other_model": save_tiny(tmp / "other_model", seed=1), "tmp": tmp}


def _args(sc: dict[str, Path], index: Path) -> list[str]:
    return ["ingest", str(sc["safe"]), str(sc["later"]), str(sc["s1"]), "--model", str(sc["model"]),
            "--index", str(index), "--precision", "fp32", "--device", "cpu"]


def _content(index: Path) -> dict:
    """What an index holds: items, vectors, counts, generation, ingested scenes."""
    from csmae.retrieval.index import SearchIndex

    si = SearchIndex.load(index)
    items = si.items.drop(columns=[c for c in si.items.columns if c.startswith("bbox")])
    rows = np.arange(si.backend.n_rows, dtype=np.int64)
    cols = {c: [v if isinstance(v, bytes) else repr(v) for v in items[c]] for c in items.columns}
    return {"items": cols, "vectors": si.backend.reconstruct(rows),
            "count": si.manifest["count"], "generation": si.manifest["generation"],
            "ingested": [(r["scene"], r["digest"], r["patches"]) for r in si.manifest["ingested"]],
            "ingested_duplicates": [(r["scene"], r["duplicates"]["count"]) for r in si.manifest["ingested"]],
            "sensors": dict(si.manifest["sensor_counts"])}


def _same(a: dict, b: dict) -> None:
    assert a["items"] == b["items"]
    np.testing.assert_allclose(a["vectors"], b["vectors"], atol=1e-6)
    assert (a["count"], a["generation"], a["ingested"]) == (b["count"], b["generation"], b["ingested"])
    assert a["ingested_duplicates"] == b["ingested_duplicates"]


@pytest.fixture(scope="module")
def reference(scenes) -> dict:
    """An uninterrupted ingest of both scenes."""
    from csmae.cli import main

    index = scenes["tmp"] / "ref-index"
    assert main(_args(scenes, index)) == 0
    return _content(index)


def test_ingest_equals_tile_embed_index_by_hand_and_is_idempotent(scenes, reference, tmp_path, capsys):
    from csmae.cli import main
    from csmae.retrieval.ingest import work_folder

    tmp = scenes["tmp"]
    for i, key in enumerate(("safe", "later")):  # by hand: one store per acquisition
        assert main(["tile", "--s2", str(scenes[key]), "--s1", str(scenes["s1"]), "--out",
                     str(tmp_path / f"store{i}")]) == 0
        assert main(["embed", str(scenes["model"]), str(tmp_path / f"store{i}"), "--out",
                     str(tmp_path / f"emb{i}"), "--precision", "fp32", "--device", "cpu"]) == 0
    assert main(["index", str(tmp_path / "emb0"), "--out", str(tmp_path / "hand")]) == 0
    assert main(["index", "add", str(tmp_path / "hand"), str(tmp_path / "emb1")]) == 0
    from csmae.retrieval.index import SearchIndex

    si = SearchIndex.load(tmp_path / "hand")
    assert reference["items"]["id"] == [repr(v) for v in si.items["id"]]
    assert reference["items"]["sensor"] == [repr(v) for v in si.items["sensor"]]
    rows = np.arange(si.backend.n_rows, dtype=np.int64)
    np.testing.assert_allclose(reference["vectors"], si.backend.reconstruct(rows), atol=1e-6)
    # 2 acquisitions x 4 S2 patches + the 4 S1 patches once: the one S1 scene is paired with both S2
    # acquisitions, and its second cut (the same place, sensor and acquisition) is not added again
    # (docs/places.md "Overlapping tiles"; before that rule the index held 16 items)
    assert reference["count"] == 12 and reference["generation"] == 1
    assert reference["sensors"] == {"s2": 8, "s1": 4}
    assert [s for s, *_ in reference["ingested"]] == [scenes[k].name[:44] for k in ("safe", "later")]
    assert [d for *_, d in reference["ingested_duplicates"]] == [0, 4]
    # a rerun skips both scenes, says so, and changes nothing
    index = tmp / "ref-index"
    before = (index / "manifest.json").read_bytes()
    capsys.readouterr()
    assert main(_args(scenes, index)) == 0
    out = capsys.readouterr().out
    assert out.count("already ingested (4 patches), skipped") == 2 and "0 scenes ingested" in out
    assert (index / "manifest.json").read_bytes() == before
    assert not work_folder(index).exists()


@pytest.mark.parametrize("stage", [pytest.param("tiled", marks=pytest.mark.slow), "embedded",
                                   pytest.param("added", marks=pytest.mark.slow)])
def test_kill_9_then_rerun_gives_the_uninterrupted_index(scenes, reference, tmp_path, stage):
    from csmae.cli import main
    from csmae.retrieval.ingest import PAUSE_ENV, work_folder

    index = tmp_path / "index"
    env = {**os.environ, PAUSE_ENV: stage, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    if stage == "embedded":  # the second scene: the index holds the first one already
        assert main([*_args(scenes, index)[:2], *_args(scenes, index)[3:]]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "csmae", *_args(scenes, index)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("ingest: at"):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)  # kill -9, mid-run
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert work_folder(index).exists()  # the work of the killed run is there to resume
    assert main(_args(scenes, index)) == 0
    _same(_content(index), reference)
    assert not work_folder(index).exists()


def test_other_model_reprocessed_product_and_foreign_work_folder_are_refused(scenes, reference, tmp_path,
                                                                             capsys):
    from csmae.cli import main
    from csmae.retrieval.ingest import work_folder

    index = tmp_path / "index"
    assert main([*_args(scenes, index)[:2], *_args(scenes, index)[3:]]) == 0  # the first scene
    before = {p.name: p.read_bytes() for p in index.iterdir()}
    args = _args(scenes, index)
    args[args.index("--model") + 1] = str(scenes["other_model"])
    capsys.readouterr()
    assert main(args) == 1
    assert "another model" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in index.iterdir()} == before and not work_folder(index).exists()
    # the same scene name from other bytes (a reprocessed product)
    changed = shutil.copytree(scenes["safe"], tmp_path / scenes["safe"].name)
    band = next(changed.rglob("*B02*"))
    band.write_bytes(band.read_bytes() + b"\0")
    # bytes that differ from the product's own manifest.safe: a damaged download, refused as such
    assert main(["ingest", str(changed), str(scenes["s1"]), "--model", str(scenes["model"]),
                 "--index", str(index)]) == 1
    assert "download it again" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in index.iterdir()} == before
    # a reprocessed product carries a manifest.safe that matches its new bytes
    from csmae.data.scenes.example import write_manifest_safe

    write_manifest_safe(changed)
    assert main(["ingest", str(changed), str(scenes["s1"]), "--model", str(scenes["model"]),
                 "--index", str(index)]) == 1
    err = capsys.readouterr().err
    assert "already ingested" in err and "from other files" in err and "nothing was changed" in err
    assert {p.name: p.read_bytes() for p in index.iterdir()} == before
    # a folder at the work folder's name that csmae did not make is left alone
    foreign = work_folder(tmp_path / "fresh")
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(_args(scenes, tmp_path / "fresh")) == 1
    assert "not a csmae ingest work folder" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine" and not (tmp_path / "fresh").exists()


def test_inputs_are_told_apart_by_name(scenes, tmp_path, capsys):
    from csmae.cli import main
    from csmae.data.scenes.readers import sensor_of_input

    assert sensor_of_input(str(scenes["safe"])) == "s2"
    assert sensor_of_input(str(scenes["s1"])) == "s1"
    assert sensor_of_input(str(next(scenes["s1"].glob("*_VV.tif")))) == "s1"
    assert sensor_of_input("items/s2.json") == "stac"
    odd = tmp_path / "odd.tif"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match="odd.tif: no scene reader recognises it"):
        sensor_of_input(str(odd))
    assert main(["ingest", str(odd), "--model", str(scenes["model"]), "--index", str(tmp_path / "i")]) == 1
    assert "--s2 PATH" in capsys.readouterr().err and not (tmp_path / "i").exists()


def test_remove_scene_drops_its_record_and_ingest_takes_it_again(scenes, reference, tmp_path, capsys):
    """``csmae index remove IDX --scene NAME`` takes out every item of an ingested scene and its
    ingest record in one commit; items removed by id drop the record only once none is left; a
    reprocessed product of that name is then ingested again (before: refused as "already
    ingested" forever, the record outliving its items)."""
    import json
    from ast import literal_eval

    from csmae.cli import main

    index = tmp_path / "index"
    assert main(_args(scenes, index)) == 0
    first, later = (scenes[k].name[:44] for k in ("safe", "later"))
    man = json.loads((index / "manifest.json").read_text())
    assert [r["scene"] for r in man["ingested"]] == [first, later]
    before = {p.name: p.read_bytes() for p in index.iterdir()}
    capsys.readouterr()
    assert main(["index", "remove", str(index), "--scene", "S2A_NOT_INGESTED"]) == 1
    assert "no ingested scene ['S2A_NOT_INGESTED']" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in index.iterdir()} == before
    # the scene's S2 items by id: its S1 items are still there, so is its record
    ids = sorted({i for i in map(literal_eval, reference["items"]["id"]) if i.startswith(first + "_r")})
    assert len(ids) == 4
    (tmp_path / "ids.txt").write_text("".join(f"{i} s2\n" for i in ids))
    assert main(["index", "remove", str(index), "--ids", str(tmp_path / "ids.txt")]) == 0
    man = json.loads((index / "manifest.json").read_text())
    assert man["count"] == 8 and [r["scene"] for r in man["ingested"]] == [first, later]
    assert "ingest records dropped" not in capsys.readouterr().out
    # the rest of the scene (its 4 S1 items) by name: the record goes with its last item
    assert main(["index", "remove", str(index), "--scene", first]) == 0
    out = capsys.readouterr().out
    assert f"ingest records dropped (no item left; csmae ingest takes them again): {first}" in out
    man = json.loads((index / "manifest.json").read_text())
    assert man["count"] == 4 and man["sensor_counts"] == {"s2": 4, "s1": 0}
    assert [r["scene"] for r in man["ingested"]] == [later] and man["updates"][-1]["forgotten"] == [first]
    # a reprocessed product of that name (other bytes, its own manifest.safe) goes in again
    from csmae.data.scenes.example import write_manifest_safe

    changed = shutil.copytree(scenes["safe"], tmp_path / scenes["safe"].name)
    band = next(changed.rglob("*B02*"))
    band.write_bytes(band.read_bytes() + b"\0")  # trailing byte: the same pixels
    write_manifest_safe(changed)
    assert main(["ingest", str(changed), str(scenes["s1"]), "--model", str(scenes["model"]),
                 "--index", str(index), "--precision", "fp32", "--device", "cpu"]) == 0
    man = json.loads((index / "manifest.json").read_text())
    assert [r["scene"] for r in man["ingested"]] == [later, first]
    assert man["ingested"][-1]["digest"] != dict((s, d) for s, d, _ in reference["ingested"])[first]
    from csmae.retrieval.index import SearchIndex

    si = SearchIndex.load(index)
    live = np.flatnonzero(si.items["live"].to_numpy(dtype=bool))
    got = dict(zip(zip(si.items["id"].to_numpy()[live], si.items["sensor"].to_numpy()[live]),
                   si.backend.reconstruct(live.astype(np.int64))))
    keys = zip(map(literal_eval, reference["items"]["id"]), map(literal_eval, reference["items"]["sensor"]))
    want = dict(zip(keys, reference["vectors"]))
    assert man["count"] == 12 and sorted(got) == sorted(want)  # the same items as ingesting both at once
    for key, v in want.items():
        np.testing.assert_allclose(got[key], v, atol=1e-6)
