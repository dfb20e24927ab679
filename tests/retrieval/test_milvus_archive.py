"""The Milvus collection is the archive (#20): a pointer folder, items and facts read from the
collection, writers refused against the recorded facts, several readers and writers on one
collection; on Milvus Lite and on a real Milvus server (``milvus_deploy``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

shapely = pytest.importorskip("shapely")
pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install 'csmae[milvus]')")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install 'csmae[milvus]')")

from csmae.retrieval.backends import milvus as M  # noqa: E402
from csmae.retrieval.backends import milvus_archive as A  # noqa: E402
from csmae.retrieval.embeddings import embeddings_from_arrays  # noqa: E402
from csmae.retrieval.index import SearchIndex, build_index  # noqa: E402
from csmae.retrieval.index_grow import add_embeddings, remove_items  # noqa: E402

from .test_index_grow import MODEL, SENSORS, make_emb, write_emb  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def with_meta(emb, seed: int = 0):
    """``emb`` with footprints, times, countries and a ``place`` column (any items column is kept)."""
    n = len(emb)
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-10, 10, n), rng.uniform(35, 45, n)
    meta = pd.DataFrame(
        {
            "geometry": [
                shapely.to_wkb(shapely.box(a, b, a + 0.3, b + 0.2)) if i % 5 else None
                for i, (a, b) in enumerate(zip(x, y))
            ],  # fmt: skip
            "bbox_xmin": np.where(np.arange(n) % 5 > 0, x, np.nan),
            "bbox_ymin": np.where(np.arange(n) % 5 > 0, y, np.nan),
            "bbox_xmax": np.where(np.arange(n) % 5 > 0, x + 0.3, np.nan),
            "bbox_ymax": np.where(np.arange(n) % 5 > 0, y + 0.2, np.nan),
            "datetime": pd.to_datetime(1.53e9 + rng.uniform(0, 9e6, n), unit="s", utc=True),
            "country": [None if i % 7 == 0 else ("Portugal", "Austria")[i % 2] for i in range(n)],
            "season": ["Summer"] * n,
            "scene": [f"S{i % 3}" for i in range(n)],
            "place": [f"tile-{i % 4}" for i in range(n)],
        }
    )
    return embeddings_from_arrays(ids=emb.ids, sensors=emb.sensors, splits=emb.splits, labels=emb.labels,
                                  vectors=emb.vectors, manifest=emb.manifest, meta=meta)  # fmt: skip


def collection_rows(be) -> list[dict]:
    return A.read_rows(
        be.client, be.collection, ["row", "id", "sensor", "vec", "meta", "ingest"], be._count()
    )


def brute(q, si: SearchIndex, k: int) -> list[list[tuple[str, str]]]:
    x = np.stack([si.reconstruct(r) for r in range(len(si.items))])
    order = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]
    return [[(si.items["id"][r], si.items["sensor"][r]) for r in row] for row in order]


def hits(si: SearchIndex, q, k: int) -> list[list[tuple[str, str]]]:
    _, rows = si.search(q, k)
    return [[(si.items["id"][r], si.items["sensor"][r]) for r in row] for row in rows]


@pytest.fixture
def archive(milvus_deploy, tmp_path):
    emb = with_meta(make_emb([f"a{i:03d}" for i in range(40)]))
    out = tmp_path / "idx"
    si = build_index(emb, "exact", out, backend="milvus", uri=milvus_deploy.uri("archive"))
    yield si, emb, out
    si.backend.drop()


def test_pointer_folder_holds_nothing_but_the_manifest(archive):
    """Items (every column, a place column too), facts and searches come from the collection."""
    si, emb, out = archive
    faiss = build_index(emb, "exact")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    loaded = SearchIndex.load(out)
    a, b = faiss.items.drop(columns="labels"), loaded.items.drop(columns="labels")
    assert list(b.columns) == list(a.columns) and "place" in b
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert (np.stack(faiss.items["labels"]) == np.stack(loaded.items["labels"])).all()
    assert loaded.manifest["model"] == MODEL and loaded.manifest["sensors"] == SENSORS
    q = np.random.default_rng(1).normal(size=(5, 24)).astype(np.float32)
    for where in (None, {"labels_any": [loaded.label_names[0]]}, {"country": ["Austria"]}):
        assert [loaded.items["id"][r].tolist() for r in loaded.search(q, 6, where=where)[1]] == [
            faiss.items["id"][r].tolist() for r in faiss.search(q, 6, where=where)[1]
        ], where
    # the facts are the collection's: a pointer that claims another model is overruled
    man = json.loads((out / "manifest.json").read_text())
    man["model"] = {**MODEL, "sha256": "f" * 64}
    (out / "manifest.json").write_text(json.dumps(man))
    assert SearchIndex.load(out).manifest["model"] == MODEL


def test_refused_writes_change_nothing(archive, tmp_path):
    si, _, out = archive
    be = si.backend
    before = (be._count(), be.facts(), be.ingests(), sorted(r["row"] for r in collection_rows(be)))
    bad_model = make_emb(["x1", "x2"], model={**MODEL, "sha256": "b" * 64})
    with pytest.raises(ValueError, match="another model"):
        add_embeddings(out, write_emb(bad_model, tmp_path / "m"))
    with pytest.raises(ValueError, match="D=8"):
        add_embeddings(out, make_emb(["x3"], d=8))
    bands = make_emb(["x4"])
    bands.manifest = {**bands.manifest, "sensors": {**SENSORS, "s2": {"bands": ["B03", "B02"]}}}
    with pytest.raises(ValueError, match="band order"):
        add_embeddings(out, bands)
    with pytest.raises(ValueError, match="not in the index"):
        remove_items(out, [("a001", None), ("nope", None)])
    after = (be._count(), be.facts(), be.ingests(), sorted(r["row"] for r in collection_rows(be)))
    assert after == before


def test_a_second_pointer_sees_writes_after_reload(archive, tmp_path):
    """Two servers (SearchIndex loads) over one collection through two pointer folders."""
    si, emb, out = archive
    other = tmp_path / "copy-on-another-machine"
    shutil.copytree(out, other)
    a, b = SearchIndex.load(out), SearchIndex.load(other)
    new = with_meta(make_emb([f"b{i:03d}" for i in range(10)]), seed=3)
    rep = add_embeddings(other, new)
    assert (rep.added, rep.replaced) == (20, 0)
    q = np.random.default_rng(2).normal(size=(4, 24)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    got = hits(a, q, 5)  # the old snapshot still answers, over what it loaded
    assert {x for h in got for x in h} <= set(zip(a.items["id"], a.items["sensor"]))
    assert got == brute(q, a, 5)
    a2 = SearchIndex.load(out)  # a reload sees the other pointer's writes
    assert len(a2.items) == len(emb) + len(new) and set(a2.items["id"]) >= set(new.ids)
    assert hits(a2, q, 5) == brute(q, a2, 5)
    assert (
        a2.items.sort_values(["id", "sensor"])
        .reset_index(drop=True)
        .equals(SearchIndex.load(other).items.sort_values(["id", "sensor"]).reset_index(drop=True))
    )
    # re-adding replaces by (id, sensor); removing through one pointer is seen through the other
    rep = add_embeddings(out, with_meta(make_emb(["b001"], seed=9), seed=4))
    assert (rep.added, rep.replaced) == (0, 2)
    remove_items(other, [("a000", None), ("a001", "s2")])
    a3 = SearchIndex.load(out)
    assert len(a3.items) == len(a2.items) - 3
    assert not {("a000", "s1"), ("a000", "s2"), ("a001", "s2")} & set(zip(a3.items["id"], a3.items["sensor"]))
    assert b.items is not None  # the first snapshot of the other pointer is still usable
    rows = collection_rows(si.backend)
    assert len(rows) == len({r["row"] for r in rows}) == len(a3.items)


def test_an_old_milvus_index_folder_with_its_items_table_still_loads(milvus_deploy, tmp_path, monkeypatch):
    emb = make_emb([f"o{i:03d}" for i in range(20)])
    real = M.create
    monkeypatch.setattr(M, "create", lambda *a, **k: real(*a, **{**k, "archive": False}))
    out = tmp_path / "old"
    si = build_index(emb, "exact", out, backend="milvus", uri=milvus_deploy.uri("old"))
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["items.parquet", "manifest.json"]
    loaded = SearchIndex.load(out)
    assert not loaded.backend.archive and len(loaded.items) == 40
    q = emb.vectors[:3] / np.linalg.norm(emb.vectors[:3], axis=1, keepdims=True)
    assert hits(loaded, q, 4) == brute(q, loaded, 4)
    si.backend.drop()


# ------------------------------------------------------------------ processes (server only)
WRITER = """
import sys
from csmae.retrieval.backends import milvus as M
from csmae.retrieval.index_grow import add_embeddings
M.INSERT_BYTES = int(sys.argv[3])  # small insert requests: many batches, a kill lands mid-write
print(add_embeddings(sys.argv[1], sys.argv[2]).added, flush=True)
"""


def writer(pointer: Path, emb_dir: Path, batch_bytes: int = 1 << 23) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(pointer), str(emb_dir), str(batch_bytes)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip


def keys_of(emb) -> set[int]:
    return set(A.item_keys(list(emb.ids), list(emb.sensors)).tolist())


def test_two_writer_processes_lose_and_duplicate_nothing(archive, milvus_deploy, tmp_path):
    if milvus_deploy.lite:
        pytest.skip("Milvus Lite allows one process per .db: concurrent writers need a server")
    si, emb, out = archive
    one = make_emb([f"w{i:04d}" for i in range(0, 600)], seed=1)
    two = make_emb([f"w{i:04d}" for i in range(500, 1100)], seed=2)  # 100 ids written by both
    dirs = [write_emb(one, tmp_path / "one"), write_emb(two, tmp_path / "two")]
    procs = [writer(out, d, 1 << 16) for d in dirs]  # both at once, many small requests each
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-2000:]
    rows = collection_rows(si.backend)
    want = keys_of(emb) | keys_of(one) | keys_of(two)
    assert len(rows) == len(want) and {r["row"] for r in rows} == want  # 0 lost, 0 duplicated
    assert all((r["id"], r["sensor"]) and A.item_key(r["id"], r["sensor"]) == r["row"] for r in rows)
    loaded = SearchIndex.load(out)
    assert len(loaded.items) == len(want) and not loaded.items.duplicated(["id", "sensor"]).any()


def test_kill_9_mid_insert_leaves_whole_items_and_a_rerun_completes(archive, milvus_deploy, tmp_path):
    if milvus_deploy.lite:
        pytest.skip("the server keeps a killed writer's acknowledged rows; Lite is one process per .db")
    si, emb, out = archive
    big = make_emb([f"k{i:04d}" for i in range(1500)], seed=5)
    src = write_emb(big, tmp_path / "big")
    be = si.backend
    base = be._count()
    p = writer(out, src, 1 << 14)  # ~7 rows a request: ~400 requests
    t0 = time.monotonic()
    while be._count() < base + 50 and p.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    p.kill()  # SIGKILL mid-write
    p.wait(timeout=30)
    rows = collection_rows(be)
    partial = len(rows) - base
    assert 0 < partial < len(big), partial
    for r in rows:  # whole items only: every row has its vector, its key, its columns
        assert len(r["vec"]) == 24 and A.item_key(r["id"], r["sensor"]) == r["row"] and "split" in r["meta"]
    tokens = {t: v["state"] for t, v in be.ingests().items()}
    assert list(tokens.values()) == ["started"]  # the interrupted write is recorded as such
    rep = add_embeddings(out, src)  # the rerun completes it
    assert rep.added + rep.replaced == len(big) and rep.replaced == partial
    rows = collection_rows(be)
    assert {r["row"] for r in rows} == keys_of(emb) | keys_of(big) and len(rows) == len(emb) + len(big)
    assert {t: v["state"] for t, v in be.ingests().items()} == {next(iter(tokens)): "done"}


def write_shards(emb, out: Path, per: int, nan_row: int | None = None) -> Path:
    """``emb`` as a folder of shards of ``per`` rows (footprints, times, countries kept)."""
    from csmae.retrieval.artifacts import base_manifest, write_json_atomic
    from csmae.retrieval.embeddings import write_shard

    out.mkdir(parents=True)
    entries = []
    vec = emb.vectors.copy()
    if nan_row is not None:
        vec[nan_row] = np.nan
    for j, lo in enumerate(range(0, len(emb), per)):
        sl = slice(lo, lo + per)
        m = emb.meta.iloc[sl]
        meta = {"geometry": m["geometry"].tolist(), "country": m["country"].tolist(),
                "datetime": [t.isoformat() for t in m["datetime"]], "place": m["place"].tolist()}  # fmt: skip
        write_shard(out / f"part-{j:05d}.parquet", ids=list(emb.ids[sl]), sensors=list(emb.sensors[sl]),
                    splits=list(emb.splits[sl]), labels=emb.labels[sl], vectors=vec[sl],
                    meta=meta)  # fmt: skip
        entries.append({"file": f"part-{j:05d}.parquet", "rows": len(emb.ids[sl])})
    man = base_manifest("csmae-embeddings", model=MODEL, sensors=SENSORS, dim=emb.dim, count=len(emb),
                        shards=entries)  # fmt: skip
    write_json_atomic(out / "manifest.json", man)
    return out


def test_index_add_of_a_folder_reads_it_shard_by_shard(archive, milvus_deploy, tmp_path, monkeypatch):
    """A pointer's ``index add`` of a folder never loads the folder's vectors at once: the same
    items (order, columns), vectors and report as adding the loaded embeddings."""
    import csmae.retrieval.embeddings as E
    from csmae.retrieval.embeddings import load_embeddings

    si, _, out = archive
    new = with_meta(make_emb([f"f{i:03d}" for i in range(45)], seed=6), seed=8)
    folder = write_shards(new, tmp_path / "new", per=16, nan_row=21)
    loaded = load_embeddings(folder)
    other = tmp_path / "other"
    build_index(with_meta(make_emb([f"a{i:03d}" for i in range(40)])), "exact", other, backend="milvus",
                uri=milvus_deploy.uri("other"))  # fmt: skip
    import csmae.retrieval.index_archive as IA

    whole_load = lambda *a, **k: pytest.fail("the folder was loaded whole")  # noqa: E731
    monkeypatch.setattr(E, "load_embeddings", whole_load)
    monkeypatch.setattr(IA, "load_embeddings", whole_load, raising=False)  # what it imported before
    streamed = add_embeddings(out, folder)
    monkeypatch.undo()
    whole = add_embeddings(other, loaded)
    assert (streamed.added, streamed.replaced, streamed.skipped_nonfinite) == (89, 0, 1)
    assert (whole.added, whole.replaced, whole.skipped_nonfinite) == (89, 0, 1)
    a, b = SearchIndex.load(out), SearchIndex.load(other)
    try:
        pd.testing.assert_frame_equal(a.items.drop(columns="labels"), b.items.drop(columns="labels"))
        assert (np.stack(a.items["labels"]) == np.stack(b.items["labels"])).all()
        rows = np.arange(len(a.items))
        np.testing.assert_array_equal(a.backend.reconstruct(rows), b.backend.reconstruct(rows))
        assert list(a.backend.ingests().values())[0]["state"] == "done"
    finally:
        b.backend.drop()
