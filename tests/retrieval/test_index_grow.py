"""csmae index add / remove / compact: same results as a scratch build, bad input, kill -9 mid-add."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from csmae.retrieval.artifacts import base_manifest, write_json_atomic
from csmae.retrieval.embeddings import Embeddings, embeddings_from_arrays, write_shard
from csmae.retrieval.index import SearchIndex, build_index
from csmae.retrieval.index_grow import add_embeddings, compact_index, read_id_file, remove_items
from csmae.retrieval.retriever import Retriever

MODEL = {"sha256": "a" * 64, "name": "tiny", "dim": 24}
SENSORS = {"s1": {"bands": ["VV", "VH"]}, "s2": {"bands": ["B02", "B03"]}}


def make_emb(ids: list[str], *, d: int = 24, seed: int = 0, model: dict | None = None) -> Embeddings:
    """Both sensors per id; vectors drawn per (id, sensor, seed) so an id's vector depends on seed."""
    vec, lab = [], []
    for i in ids:
        h = int(hashlib.sha256(f"{i}-{seed}".encode()).hexdigest()[:8], 16)
        r = np.random.default_rng(h)
        vec.append(r.normal(size=(2, d)))
        lab.append(r.random(19) < 0.2)
    return embeddings_from_arrays(
        ids=[i for i in ids for _ in range(2)],
        sensors=["s1", "s2"] * len(ids),
        splits=["train"] * (2 * len(ids)),
        labels=np.repeat(np.array(lab), 2, axis=0),
        vectors=np.concatenate(vec).astype(np.float32),
        manifest={"sensors": SENSORS, "model": model or MODEL},
    )


def write_emb(emb: Embeddings, out: Path) -> Path:
    out.mkdir(parents=True)
    write_shard(
        out / "part-00000.parquet",
        ids=list(emb.ids),
        sensors=list(emb.sensors),
        splits=list(emb.splits),
        labels=emb.labels,
        vectors=emb.vectors,
    )
    man = base_manifest(
        "csmae-embeddings",
        model=emb.manifest["model"],
        sensors=emb.manifest["sensors"],
        dim=emb.dim,
        count=len(emb),
        shards=[{"file": "part-00000.parquet", "rows": len(emb)}],
    )
    write_json_atomic(out / "manifest.json", man)
    return out


def concat(*embs: Embeddings) -> Embeddings:
    return embeddings_from_arrays(
        ids=np.concatenate([e.ids for e in embs]),
        sensors=np.concatenate([e.sensors for e in embs]),
        splits=np.concatenate([e.splits for e in embs]),
        labels=np.concatenate([e.labels for e in embs]),
        vectors=np.concatenate([e.vectors for e in embs]),
        manifest=embs[0].manifest,
    )


def results(si: SearchIndex, q: np.ndarray, k: int = 10, **kw) -> list[list[tuple[str, str, float]]]:
    s, r = si.search(q, k, **kw)
    ids, sens = si.items["id"].to_numpy(), si.items["sensor"].to_numpy()
    return [[(ids[j], sens[j], round(float(x), 5)) for x, j in zip(ss, rr) if j >= 0] for ss, rr in zip(s, r)]


def folder_digest(path: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir()) if f.is_file()}


IDS_A = [f"a{i:03d}" for i in range(300)]
IDS_B = [f"b{i:03d}" for i in range(120)]


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf", "ivfpq"])
def test_add_remove_round_trip_equals_scratch_build(tmp_path, kind):
    a, b = make_emb(IDS_A), make_emb(IDS_B)
    build_index(a, kind, tmp_path / "idx")
    rep = add_embeddings(tmp_path / "idx", write_emb(b, tmp_path / "b"))
    assert (rep.added, rep.replaced, rep.count) == (240, 0, 840)
    # re-add 10 ids of A with new vectors: replaced, and said so
    redo = make_emb(IDS_A[:10], seed=1)
    rep = add_embeddings(tmp_path / "idx", redo)
    assert (rep.added, rep.replaced) == (0, 20) and ("a000", "s1") in rep.replaced_ids
    ids_file = tmp_path / "gone.txt"
    ids_file.write_text("# withdrawn\n" + "\n".join(IDS_A[50:80]) + "\nb005 s2\n")
    rep = remove_items(tmp_path / "idx", read_id_file(ids_file))
    assert rep.removed == 61 and rep.count == 840 - 61
    grown = SearchIndex.load(tmp_path / "idx")
    # the final set, from scratch
    keep = [i for i in IDS_A[10:] if i not in IDS_A[50:80]]
    final = concat(make_emb(keep), redo, b)
    final = final.select(~((final.ids == "b005") & (final.sensors == "s2")))
    scratch = build_index(final, "exact")
    assert grown.manifest["count"] == len(final) and len(grown.backend) == len(final)
    q = np.random.default_rng(5).normal(size=(30, 24)).astype(np.float32)
    for kw in ({}, {"target": "s2"}, {"where": {"labels_any": ["Arable land", "Pastures"]}}):
        got, want = results(grown, q, **kw), results(scratch, q, **kw)
        if kind == "exact":
            assert got == want
        else:
            rec = np.mean(
                [len({g[:2] for g in gg} & {w[:2] for w in ww}) / len(ww) for gg, ww in zip(got, want)]
            )
            assert rec >= 0.95, (kind, kw, rec)
    # search by id of a replaced item uses its new vector; removed items are gone
    r = Retriever(grown)
    hits = r.search_by_id("a000", sensor="s1", k=1, exclude_self=False)
    assert hits[0].id == "a000" and hits[0].score == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(KeyError):
        r.row_of("a060", "s1")
    assert not any(h.id in IDS_A[50:80] for hs in r.search_by_vectors(q, k=50) for h in hs)
    leftovers = sorted(f.name for f in (tmp_path / "idx").iterdir())
    assert not [f for f in leftovers if ".tmp-" in f or f in ("index.faiss", "items.parquet")], leftovers


def test_hnsw_tombstones_and_compact(tmp_path):
    build_index(make_emb(IDS_A), "hnsw", tmp_path / "idx")
    remove_items(tmp_path / "idx", [(i, None) for i in IDS_A[:100]])
    si = SearchIndex.load(tmp_path / "idx")
    assert si.backend.tombstones == 200 and si.index.ntotal == 600 and len(si.backend) == 400
    q = np.random.default_rng(2).normal(size=(20, 24)).astype(np.float32)
    before = results(si, q)
    assert not any(h[0] in IDS_A[:100] for hs in before for h in hs)
    rep = compact_index(tmp_path / "idx")
    assert rep.removed == 200
    si2 = SearchIndex.load(tmp_path / "idx")
    assert si2.backend.tombstones == 0 and si2.index.ntotal == 400
    after = results(si2, q)
    rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(after, before)])
    assert rec >= 0.95


def test_incompatible_embeddings_leave_the_index_untouched(tmp_path):
    build_index(make_emb(IDS_A[:50]), "exact", tmp_path / "idx")
    before = folder_digest(tmp_path / "idx")
    other = make_emb(IDS_B[:5], model={**MODEL, "sha256": "b" * 64})
    with pytest.raises(ValueError, match="another model.*nothing was added"):
        add_embeddings(tmp_path / "idx", other)
    with pytest.raises(ValueError, match="D=16.*D=24"):
        add_embeddings(tmp_path / "idx", make_emb(IDS_B[:5], d=16))
    bands = make_emb(IDS_B[:5])
    bands.manifest = {**bands.manifest, "sensors": {**SENSORS, "s2": {"bands": ["B03", "B02"]}}}
    with pytest.raises(ValueError, match="band order"):
        add_embeddings(tmp_path / "idx", bands)
    dup = concat(make_emb(IDS_B[:3]), make_emb(IDS_B[:1]))
    with pytest.raises(ValueError, match="duplicate"):
        add_embeddings(tmp_path / "idx", dup)
    with pytest.raises(ValueError, match="not in the index.*'zzz'"):
        remove_items(tmp_path / "idx", [("a001", None), ("zzz", None)])
    assert folder_digest(tmp_path / "idx") == before
    rep = remove_items(tmp_path / "idx", [("a001", None), ("zzz", None)], missing_ok=True)
    assert rep.removed == 2


def test_filtered_search_after_updates_equals_brute_force(tmp_path):
    build_index(make_emb(IDS_A[:200]), "exact", tmp_path / "idx")
    add_embeddings(tmp_path / "idx", make_emb(IDS_B))
    remove_items(tmp_path / "idx", [(i, "s1") for i in IDS_A[:40]])
    si = SearchIndex.load(tmp_path / "idx")
    q = np.random.default_rng(3).normal(size=(8, 24)).astype(np.float32)
    where = {"sensor": ["s1"], "labels_none": ["Arable land"]}
    s, rows = si.search(q, 10, where=where)
    items = si.items
    lab = np.stack(items["labels"].to_numpy())
    ok = items["live"].to_numpy() & (items["sensor"].to_numpy() == "s1") & ~lab[:, 1]
    allowed = np.flatnonzero(ok)
    x = si.backend.reconstruct(allowed)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    want = allowed[np.argsort(-(qn @ x.T), axis=1, kind="stable")[:, :10]]
    np.testing.assert_array_equal(rows, want)


_ADD_SCRIPT = """
import sys
from csmae.retrieval.index_grow import add_embeddings
add_embeddings(sys.argv[1], sys.argv[2])
print("done", flush=True)
"""


def test_kill_9_during_add_leaves_old_or_new(tmp_path):
    d = 384
    a = make_emb([f"a{i}" for i in range(3000)], d=d)
    b = make_emb([f"b{i}" for i in range(3000)], d=d)
    build_index(a, "exact", tmp_path / "idx")
    emb_b = write_emb(b, tmp_path / "b")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    outcomes = set()
    for delay in (0.5, 1.5, 3.0):
        idx = tmp_path / f"idx{delay}"
        subprocess.run(["cp", "-r", str(tmp_path / "idx"), str(idx)], check=True)
        p = subprocess.Popen(
            [sys.executable, "-c", _ADD_SCRIPT, str(idx), str(emb_b)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        si = SearchIndex.load(idx)  # must load: old (6000) or new (12000)
        n = si.manifest["count"]
        assert n in (6000, 12000) and len(si.backend) == n and int(si.items["live"].sum()) == n
        q = b.vectors[:1] if n == 12000 else a.vectors[:1]
        assert results(si, q, k=1)[0][0][0] == (b.ids[0] if n == 12000 else a.ids[0])
        outcomes.add(n)
        # the next add cleans up and completes
        rep = add_embeddings(idx, emb_b)
        assert rep.count == 12000
        names = {f.name for f in idx.iterdir()}
        assert not [f for f in names if ".tmp-" in f], names
        assert len([f for f in names if f.endswith(".faiss")]) == 1
    assert 6000 in outcomes  # at least one kill landed before the commit point


def test_retriever_reload_picks_up_a_grown_index(tmp_path):
    build_index(make_emb(IDS_A[:20]), "exact", tmp_path / "idx")
    r = Retriever.load(tmp_path / "idx")
    add_embeddings(tmp_path / "idx", make_emb(IDS_B[:5]))
    with pytest.raises(KeyError):
        r.row_of("b000", "s2")
    info = r.reload()
    assert info == {"count_before": 40, "count": 50, "generation": 1}
    assert r.search_by_id("b000", sensor="s2", k=1, exclude_self=False)[0].id == "b000"
    man = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert man["updates"][-1]["op"] == "add" and "sensor_ranges" not in man


def test_updates_keep_checksums_and_skip_nonfinite(tmp_path):
    from csmae.integrity import IntegrityError, verify_manifest_files

    build_index(make_emb(IDS_A[:30]), "ivfpq", tmp_path / "idx")
    new = make_emb(IDS_B[:10])
    new.vectors[3] = np.nan  # one bad vector: skipped, reported
    rep = add_embeddings(tmp_path / "idx", new)
    assert rep.added == 19 and rep.skipped_nonfinite == 1
    remove_items(tmp_path / "idx", [("a001", None)])
    man = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert sorted(man["checksums"]) == sorted(
        [
            man["backend"]["file"],
            man["files"]["items"],
            *(c["file"] for c in man["backend"]["vectors"]["chunks"]),
        ]
    )
    assert verify_manifest_files(tmp_path / "idx", man, what="index")
    chunk = tmp_path / "idx" / man["backend"]["vectors"]["chunks"][-1]["file"]
    data = bytearray(chunk.read_bytes())
    data[10] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="corrupted"):
        SearchIndex.load(tmp_path / "idx")


def test_format_1_folders_still_search_and_refuse_updates(tmp_path):
    """An index folder written before row ids (plain FAISS index, positions = rows) loads and filters."""
    import faiss
    import pandas as pd

    emb = make_emb(IDS_A[:40])
    x = emb.vectors / np.linalg.norm(emb.vectors, axis=1, keepdims=True)
    old = tmp_path / "old"
    old.mkdir()
    flat = faiss.IndexFlatIP(24)
    flat.add(x)
    faiss.write_index(flat, str(old / "index.faiss"))
    items = pd.DataFrame(
        {"id": emb.ids, "sensor": emb.sensors, "split": emb.splits, "labels": list(emb.labels)}
    )
    items.to_parquet(old / "items.parquet", index=False)
    man = base_manifest(
        "csmae-index", model=MODEL, dim=24, sensors=SENSORS, index_kind="exact", factory="Flat", count=80,
        sensor_ranges={"s1": [0, 80]}, search_params={},
    )  # fmt: skip
    write_json_atomic(old / "manifest.json", man)
    si = SearchIndex.load(old)
    q = x[:3]
    s, rows = si.search(q, 5, where={"labels_none": ["Arable land"]})
    ok = np.flatnonzero(~emb.labels[:, 1])
    want = ok[np.argsort(-(q @ x[ok].T), axis=1, kind="stable")[:, :5]]
    np.testing.assert_array_equal(rows, want)
    with pytest.raises(ValueError, match="older csmae"):
        add_embeddings(old, make_emb(IDS_B[:2]))
