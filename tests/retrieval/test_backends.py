"""The engine registry and protocol: every registered engine, built through the index layer, against
brute force; the index layer names no engine; finding engines needs no optional extra."""

from __future__ import annotations

import ast
import gc
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from csmae.retrieval.backends import registry
from csmae.retrieval.backends.base import BackendSpec, VectorBackend, owns_items
from csmae.retrieval.index import SearchIndex, build_index
from csmae.retrieval.index_grow import add_embeddings, remove_items

from .conftest import random_embeddings
from .test_index_grow import make_emb
from .test_vectorstore import mapped_kb

SRC = Path(__file__).resolve().parents[2] / "src" / "csmae"


def engine_options(name: str, tmp: Path) -> dict[str, str]:
    """What each engine needs to run here (None: its extra is not installed)."""
    if name == "milvus":
        if importlib.util.find_spec("pymilvus") is None or importlib.util.find_spec("milvus_lite") is None:
            pytest.skip("pymilvus / milvus-lite are not installed (pip install 'csmae[milvus]')")
        return {"uri": str(tmp / "lite" / "archive.db")}
    return {}


def brute_top(q: np.ndarray, x: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """Row ids of the k largest inner products among ``allowed`` (ties by row id)."""
    out = []
    for v in q:
        s = [(-float(np.dot(v.astype(np.float64), x[r].astype(np.float64))), int(r)) for r in allowed]
        out.append([r for _, r in sorted(s)[:k]])
    return np.array(out, dtype=np.int64)


def test_registry_finds_every_engine_module():
    """One spec per engine module (``BACKEND``), one default, unique names and flags."""
    specs = registry.specs()
    modules = sorted(
        p.stem
        for p in (SRC / "retrieval" / "backends").glob("*.py")
        if re.search(r"^BACKEND = BackendSpec\(", p.read_text(), re.M)
    )
    assert sorted(s.name for s in specs) == modules == ["faiss", "milvus"]
    assert all(isinstance(s, BackendSpec) for s in specs)
    assert registry.backend_names()[0] == registry.default_backend() == "faiss"
    assert [s.name for s in specs if s.default] == ["faiss"]
    assert registry.get_spec("faiss").legacy_entry is not None
    flags = [o.flag for o, _ in registry.cli_options()]
    assert flags == ["--uri", "--collection"] and len(set(flags)) == len(flags)
    with pytest.raises(ValueError, match=r"unknown backend 'qdrant'; backends are \['faiss', 'milvus'\]"):
        registry.get_spec("qdrant")
    with pytest.raises(TypeError, match="unknown backend option 'nlist'"):
        registry.create_backend("faiss", "exact", dim=4, n_hint=1, label_names=[], nlist=4)


@pytest.mark.parametrize("engine", registry.backend_names())
def test_every_engine_through_the_index_layer_matches_brute_force(engine, tmp_path):
    """Build, filtered search, load, add and remove through SearchIndex / index_grow only."""
    opts = engine_options(engine, tmp_path)
    emb = make_emb([f"a{i:03d}" for i in range(60)])
    out = tmp_path / "idx"
    si = build_index(emb, "exact", out, backend=engine, **opts)
    assert isinstance(si.backend, VectorBackend) and si.backend.name == engine
    assert si.manifest["backend"]["backend"] == engine
    own = si.backend.files()
    assert all((out / f).is_file() for f in own) and set(own) <= set(si.manifest["checksums"])
    x = emb.vectors / np.linalg.norm(emb.vectors, axis=1, keepdims=True)
    order = np.concatenate([np.flatnonzero(emb.sensors == s) for s in emb.sensor_names])
    x = x[order]  # row i of the index = embeddings row order[i]
    q = np.random.default_rng(0).normal(size=(4, 24)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    arable = si.label_names.index("Arable land")
    allowed = np.flatnonzero(~np.stack(si.items["labels"].to_numpy())[:, arable])
    assert 0 < len(allowed) < len(x)
    for index in (si, SearchIndex.load(out)):
        _, rows = index.search(q, 5, where={"labels_none": ["Arable land"]})
        np.testing.assert_array_equal(rows, brute_top(q, x, allowed, 5))

    rep = remove_items(out, [(str(si.items["id"][0]), None)])
    assert rep.removed == 2
    add_embeddings(out, make_emb([f"n{i}" for i in range(5)]))
    grown = SearchIndex.load(out)
    # an engine keeping the archive (#20) reads it afresh: row ids are positions of what it holds now
    rows_ever = 128 if owns_items(grown.backend) else 130
    assert len(grown.backend) == 120 - 2 + 10 and grown.backend.n_rows == rows_ever
    kept = set(grown.backend.files())
    engine_files = {f.name for f in out.iterdir() if registry.owned_file(f.name)}
    assert engine_files == kept  # the previous version's files are gone
    live = np.flatnonzero(grown.items["live"].to_numpy())
    xs = np.stack([grown.reconstruct(int(r)) for r in live])
    all_x = np.zeros((grown.backend.n_rows, 24), np.float32)
    all_x[live] = xs
    _, rows = grown.search(q, 7)
    np.testing.assert_array_equal(rows, brute_top(q, all_x, live, 7))
    if engine == "milvus":
        grown.backend.discard()


def test_ivfpq_scratch_vectors_live_as_long_as_the_index(tmp_path):
    """An in-memory ivfpq index keeps its on-disk vectors in a temporary folder until it goes;
    saved, they live in the index folder only."""
    emb = random_embeddings(n_pairs=300, d=16)
    si = build_index(emb, "ivfpq")
    scratch = si.backend.store.folder
    assert scratch.is_dir() and any(scratch.iterdir())
    del si
    gc.collect()
    assert not scratch.exists()
    si = build_index(emb, "ivfpq", tmp_path / "idx")
    assert si.backend.store.folder == tmp_path / "idx"
    assert sorted(si.backend.files()) == sorted(f for f in si.manifest["checksums"] if f != "items.parquet")


def test_ivfpq_rerank_in_chunks_gives_the_same_answer_and_exact_scores(monkeypatch):
    """The on-disk re-rank takes the queries a chunk at a time (bounded memory: the tuning's 500
    queries x depth 1000 held 5.5 GB at 1M): the same rows and scores as one chunk, and each
    score the exact inner product with the stored vector (brute force)."""
    import csmae.retrieval.backends.faiss as fb

    emb = random_embeddings(n_pairs=400, d=16)
    si = build_index(emb, "ivfpq")
    be = si.backend
    q = np.ascontiguousarray(emb.vectors[:37] / np.linalg.norm(emb.vectors[:37], axis=1, keepdims=True))
    params = {"rerank": 50}
    monkeypatch.setattr(fb, "RERANK_CHUNK_ROWS", 120)  # 2 queries (x 50 candidates) per chunk
    s2, r2 = be.search(q, 7, params=params)
    if Path("/proc/self/smaps").exists():  # a batch of chunks reads the store without mapping it
        assert mapped_kb(be.store.folder) == 0
    monkeypatch.setattr(fb, "RERANK_BLOCK", 7)  # pairs scored a few at a time: the same scores
    s3, r3 = be.search(q, 7, params=params)
    np.testing.assert_array_equal(r2, r3)
    np.testing.assert_array_equal(s2, s3)
    monkeypatch.undo()
    s1, r1 = be.search(q, 7, params=params)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(s1, s2)
    stored = be.reconstruct(np.arange(be.n_rows, dtype=np.int64)).astype(np.float64)
    for i in range(len(q)):
        ok = r2[i] >= 0
        np.testing.assert_allclose(s2[i][ok], stored[r2[i][ok]] @ q[i].astype(np.float64), atol=1e-5)


def test_the_index_layer_names_no_engine():
    """retrieval/index.py and index_grow.py import no engine module and hold no engine's name."""
    engines = [s.name for s in registry.specs()]
    words = {*engines, "ivfpq", "index.faiss"}
    for name in ("index.py", "index_grow.py"):
        tree = ast.parse((SRC / "retrieval" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not any(f"backends.{e}" in (node.module or "") for e in engines), (name, node.module)
                assert not {a.name for a in node.names} & set(engines), name
            if isinstance(node, ast.Import):
                assert not any(".backends." in a.name for a in node.names), name
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef)
            and n.body
            and isinstance(n.body[0], ast.Expr)
        }
        literals = [
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
        ]
        assert not [s for s in literals if any(w in s.lower() for w in words)], name


def test_finding_engines_and_building_needs_no_optional_extra(tmp_path):
    """With pymilvus unimportable, the registry still lists every engine and FAISS builds."""
    code = (
        "import sys\n"
        "sys.modules['pymilvus'] = None\n"
        "from csmae.retrieval.backends import registry\n"
        "from csmae.retrieval.index import build_index\n"
        "from tests.retrieval.conftest import random_embeddings\n"
        "build_index(random_embeddings(n_pairs=5), 'exact', sys.argv[1])\n"
        "print(registry.backend_names())\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "idx")], capture_output=True, text=True, timeout=120,
        cwd=root, env={"PYTHONPATH": ":".join([str(root / "src"), str(root)]), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "['faiss', 'milvus']"
    assert (tmp_path / "idx" / "manifest.json").exists()
