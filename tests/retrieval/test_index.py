"""Index folders: round trip, sensor filter, approximate vs exact, damaged folders, no in-place overwrite."""

from __future__ import annotations

import json

import numpy as np
import pytest

from csmae.retrieval.embeddings import embeddings_from_arrays
from csmae.retrieval.index import SearchIndex, build_index
from csmae.retrieval.topk import exact_topk, l2_normalize

from .conftest import random_embeddings


def clustered(n: int = 3000, d: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, d))
    x = centres[rng.integers(0, 40, n)] + 0.3 * rng.normal(size=(n, d))
    return embeddings_from_arrays(
        ids=[f"p{i // 2}" for i in range(n)],
        sensors=["s1", "s2"] * (n // 2),
        splits=None,
        labels=np.zeros((n, 19), bool),
        vectors=x.astype(np.float32),
        manifest={"sensors": {"s1": {}, "s2": {}}},
    )


def test_round_trip_and_exact_search(tmp_path):
    emb = random_embeddings(n_pairs=50, d=8)
    si = build_index(emb, "exact", tmp_path / "idx")
    loaded = SearchIndex.load(tmp_path / "idx")
    man = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert man["kind"] == "csmae-index" and man["count"] == 100 and man["dim"] == 8
    assert loaded.sensors == ["s1", "s2"] and loaded.sensor_range("s2") == (50, 100)
    assert loaded.items["id"].tolist() == si.items["id"].tolist()
    q = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    for target in ("any", "s1", "s2"):
        s, rows = loaded.search(q, 7, target=target)
        lo, hi = (0, 100) if target == "any" else loaded.sensor_range(target)
        assert ((rows >= lo) & (rows < hi)).all()
        assert (loaded.items["sensor"].to_numpy()[rows] == target).all() or target == "any"
        vecs = l2_normalize(np.stack([loaded.index.reconstruct(i) for i in range(lo, hi)]))
        es, ei = exact_topk(l2_normalize(q), vecs, 7, precision="fp32")
        np.testing.assert_allclose(s, es, atol=1e-5)
        assert (rows - lo == ei).mean() > 0.95  # equal up to float near-ties


@pytest.mark.parametrize("kind", ["hnsw", "hnsw-sq8", "ivf", "IVF16,SQ8"])
def test_approximate_kinds_agree_with_exact(tmp_path, kind):
    emb = clustered()
    si = build_index(emb, kind, tmp_path / kind, recall_queries=200)
    man = si.manifest
    assert man["recall_at_10"] is not None
    if kind in ("hnsw", "ivf"):  # tuned kinds with exact vectors reach the target
        assert man["recall_at_10"] >= 0.95
    if kind == "hnsw-sq8":  # 8-bit vectors in 32-d cap recall below 0.95: the cheapest efSearch at the cap
        assert 0.9 <= man["recall_at_10"] < 0.95
        assert man["search_params"]["efSearch"] < 512
    # independent check on other queries
    x = l2_normalize(emb.vectors)
    rng = np.random.default_rng(5)
    qi = rng.choice(len(x), 100, replace=False)
    q = x[qi] + 0.05 * rng.normal(size=(100, x.shape[1])).astype(np.float32)
    _, ei = exact_topk(l2_normalize(q), x, 10, precision="fp32")
    _, rows = SearchIndex.load(tmp_path / kind).search(q, 10)
    order = np.concatenate([np.flatnonzero(emb.sensors == s) for s in ("s1", "s2")])  # index row order
    ai = order[rows]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ai, ei)])
    assert recall >= (0.9 if kind != "IVF16,SQ8" else 0.3)


def test_search_by_reconstructed_vector_works_for_ivf(tmp_path):
    si = build_index(clustered(n=600), "ivf", tmp_path / "ivf")
    v = SearchIndex.load(tmp_path / "ivf").index.reconstruct(3)
    np.testing.assert_allclose(v, si.index.reconstruct(3))


def test_damaged_folders_give_clear_errors(tmp_path):
    emb = random_embeddings(n_pairs=10, d=4)
    build_index(emb, "exact", tmp_path / "idx")
    with pytest.raises(FileNotFoundError):
        SearchIndex.load(tmp_path / "missing")
    half = tmp_path / "half"
    half.mkdir()
    (half / "index.faiss").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="half-written"):
        SearchIndex.load(half)
    # truncated index file
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "idx", bad)
    data = (bad / "index.faiss").read_bytes()
    (bad / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupted"):
        SearchIndex.load(bad)
    # manifest that disagrees with the files
    shutil.rmtree(bad)
    shutil.copytree(tmp_path / "idx", bad)
    man = json.loads((bad / "manifest.json").read_text())
    man["count"] = 999
    (bad / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="inconsistent"):
        SearchIndex.load(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupted"):
        SearchIndex.load(bad)
    (bad / "manifest.json").write_text(json.dumps({"kind": "csmae-embeddings"}))
    with pytest.raises(ValueError, match="not a csmae-index"):
        SearchIndex.load(bad)


def test_nothing_is_overwritten_in_place(tmp_path):
    emb = random_embeddings(n_pairs=10, d=4)
    build_index(emb, "exact", tmp_path / "idx")
    before = (tmp_path / "idx" / "index.faiss").read_bytes()
    with pytest.raises(FileExistsError):
        build_index(emb, "exact", tmp_path / "idx")
    with pytest.raises(ValueError, match="FAISS cannot build"):
        build_index(emb, "NoSuchIndex123", tmp_path / "idx", overwrite=True)
    assert (tmp_path / "idx" / "index.faiss").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp folders left behind
    emb2 = random_embeddings(n_pairs=12, d=4, seed=9)
    build_index(emb2, "exact", tmp_path / "idx", overwrite=True)
    assert SearchIndex.load(tmp_path / "idx").manifest["count"] == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_empty_embeddings_and_bad_queries(tmp_path):
    emb = random_embeddings(n_pairs=4, d=4)
    with pytest.raises(ValueError, match="empty"):
        build_index(emb.select(emb.mask(sensor="s3")), "exact")
    si = build_index(emb, "exact")
    with pytest.raises(ValueError, match="D=5"):
        si.search(np.ones((1, 5), np.float32), 3)
    with pytest.raises(ValueError, match="no 's3'"):
        si.search(np.ones((1, 4), np.float32), 3, target="s3")


@pytest.mark.parametrize("n_queries", [1, 3, 4, 40])
def test_exact_batches_on_both_faiss_paths_equal_brute_force(tmp_path, n_queries):
    # D=768: 1-3 queries per call take FAISS's per-query scan, 4 and more its BLAS path (BLAS_THRESHOLD)
    emb = random_embeddings(n_pairs=150, d=768, seed=7)
    si = build_index(emb, "exact", tmp_path / "x")
    import faiss

    assert faiss.cvar.distance_compute_blas_threshold == 4 * 768
    q = np.random.default_rng(n_queries).normal(size=(n_queries, 768)).astype(np.float32)
    for target in ("any", "s2"):
        s, rows = si.search(q, 10, target=target)
        lo, hi = (0, 300) if target == "any" else si.sensor_range(target)
        vecs = l2_normalize(np.stack([si.index.reconstruct(i) for i in range(lo, hi)]))
        es, ei = exact_topk(l2_normalize(q), vecs, 10, precision="fp32")
        np.testing.assert_allclose(s, es, atol=1e-5)
        np.testing.assert_array_equal(rows - lo, ei)  # random 768-d scores: no near-ties
        one_by_one = np.concatenate([si.search(q[i : i + 1], 10, target=target)[1] for i in range(n_queries)])
        np.testing.assert_array_equal(rows, one_by_one)
