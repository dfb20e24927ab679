"""Corruption suite: every artefact kind, damaged four ways, gives a clear error naming the file.

Damage: ``truncate`` (the end cut off), ``flip`` (40 random bytes inverted), ``shorten`` (a valid
file of the right format with fewer records) and ``pickle`` (a pickle in its place). Each damaged
artefact is loaded the way csmae loads it (store opened and read, embeddings read, index and model
loaded, checkpoint checked for resume); the error must name the damaged file, and nothing may be
served from it. A store is checked cheaply when opened (sizes and counts), so byte flips in its
record files are found by ``csmae verify`` (tested here too) rather than by opening it.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.integrity.conftest import copy_artefact

MODES = ("truncate", "flip", "shorten", "pickle")
#: (artefact, file inside it) pairs damaged by every mode
TARGETS = [
    ("store", "s1.npy"), ("store", "s2.npy"), ("store", "pairs.parquet"),
    ("embeddings", "part-00000.parquet"), ("embeddings", "part-00001.parquet"),
    ("index-exact", "index.faiss"), ("index-exact", "items.parquet"),
    ("index-hnsw", "index.faiss"), ("index-hnsw", "items.parquet"),
    ("model", "model.safetensors"), ("model", "config.json"),
    ("checkpoint", None),
]


def flip_bytes(path: Path, n: int = 40, seed: int = 0) -> None:
    """Invert ``n`` bytes at random positions past the first 16 (headers stay plausible)."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.choice(np.arange(16, len(data)), size=min(n, len(data) - 16), replace=False):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _shorten(path: Path) -> None:
    """Rewrite ``path`` as a valid file of its format holding fewer records."""
    import pyarrow.parquet as pq

    name = path.name
    if name.endswith(".npy"):
        np.save(path, np.load(path)[:-2])
    elif name.endswith(".parquet"):
        t = pq.read_table(path)
        pq.write_table(t.slice(0, t.num_rows - 2), path)
    elif name == "index.faiss":
        import faiss

        idx = faiss.read_index(str(path))
        n = idx.ntotal - 2
        vecs = idx.reconstruct_n(0, n)
        small = faiss.index_factory(idx.d, "HNSW32,Flat" if "HNSW" in type(idx).__name__ else "Flat",
                                    faiss.METRIC_INNER_PRODUCT)
        small.add(vecs)
        faiss.write_index(small, str(path))
    elif name == "model.safetensors":
        from safetensors.torch import load_file, save_file

        state = load_file(str(path))
        state.pop(sorted(state)[-1])
        save_file(state, str(path))
    elif name == "config.json":
        d = json.loads(path.read_text())
        d.pop("sensors")
        path.write_text(json.dumps(d))
    elif name.endswith(".ckpt"):
        import torch

        ck = torch.load(path, weights_only=True)
        ck.pop("optimizer_states")
        torch.save(ck, path)
    else:  # pragma: no cover - every target is covered above
        raise AssertionError(name)


def damage(path: Path, mode: str) -> None:
    if mode == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif mode == "flip":
        flip_bytes(path)
    elif mode == "shorten":
        _shorten(path)
    else:  # a pickle of something harmless in its place
        path.write_bytes(pickle.dumps({"weights": np.arange(64, dtype=np.float32)}))


def load(kind: str, path: Path) -> None:
    """Load an artefact the way csmae does before using it (raises on damage)."""
    if kind == "store":
        from csmae.data.store import StoreDataset

        ds = StoreDataset(path)
        ds.get_batch(np.arange(len(ds)))
    elif kind == "embeddings":
        from csmae.retrieval.embeddings import load_embeddings

        load_embeddings(path)
    elif kind.startswith("index"):
        from csmae.retrieval.index import SearchIndex

        SearchIndex.load(path).search(np.ones((1, 192), np.float32), 3)
    elif kind == "model":
        from csmae.models import from_pretrained

        from_pretrained(path)
    else:
        from csmae.training.checkpoint import check_checkpoint

        check_checkpoint(path)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("kind", "name"), TARGETS, ids=[f"{k}-{n or 'ckpt'}" for k, n in TARGETS])
def test_damaged_artefact_is_refused_naming_the_file(artefacts, tmp_path, kind, name, mode):
    art = copy_artefact(artefacts[kind], tmp_path)
    load(kind, art)  # the intact copy loads
    target = art / name if name else art
    damage(target, mode)
    if kind == "store" and mode == "flip" and name.endswith(".npy"):
        load(kind, art)  # the cheap open check does not hash; csmae verify does
        from csmae.cli import main

        assert main(["verify", str(art)]) == 1
        return
    with pytest.raises((ValueError, RuntimeError)) as err:
        load(kind, art)
    assert str(target) in str(err.value), str(err.value)


def test_flipped_vector_in_index_is_caught_and_would_otherwise_rank_first(artefacts, tmp_path):
    """The issue's case: flipped exponent bits of one stored vector (score 2.9e38 for every query)."""
    from csmae.retrieval.index import SearchIndex

    art = copy_artefact(artefacts["index-exact"], tmp_path)
    si = SearchIndex.load(art)
    d = si.dim
    victim = 5
    data = bytearray((art / "index.faiss").read_bytes())
    stored = np.asarray(si.index.reconstruct(victim), dtype=np.float32).tobytes()
    off = bytes(data).find(stored)  # the victim's floats, wherever the index layout puts them
    assert off >= 0 and bytes(data).count(stored) == 1
    data[off:off + 4] = np.float32(2.9e38).tobytes()  # bits of its first component flipped: 2.9e38
    (art / "index.faiss").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"index\.faiss: sha256 mismatch") as err:
        SearchIndex.load(art)
    assert str(art / "index.faiss") in str(err.value)
    # without checksums (an old folder) the damage is real: the victim outranks everything
    man = json.loads((art / "manifest.json").read_text())
    man.pop("checksums")
    (art / "manifest.json").write_text(json.dumps(man))
    q = np.random.default_rng(0).normal(size=(4, d)).astype(np.float32)
    q[:, 0] = np.abs(q[:, 0]) + 0.1
    scores, rows = SearchIndex.load(art).search(q, 3)
    assert (rows[:, 0] == victim).all() and (scores[:, 0] > 1e30).all()


def test_forty_flipped_bytes_in_an_embeddings_shard(artefacts, tmp_path):
    """The issue's case: `csmae index` must not build from a damaged shard."""
    from csmae.cli import main

    art = copy_artefact(artefacts["embeddings"], tmp_path)
    shard = art / "part-00001.parquet"
    flip_bytes(shard, 40, seed=3)
    assert main(["index", str(art), "--out", str(tmp_path / "idx")]) == 1
    assert not (tmp_path / "idx").exists()
    from csmae.retrieval.index import build_index

    with pytest.raises(ValueError, match="part-00001.parquet is damaged"):
        build_index(art, "exact", tmp_path / "idx")


def test_damaged_hnsw_never_reaches_faiss_and_allocates_nothing(artefacts, tmp_path, monkeypatch):
    """Random byte changes in an HNSW index.faiss can make FAISS allocate > 4 GiB: never parsed."""
    import subprocess
    import sys
    import time

    import csmae.retrieval.backends.faiss as fb
    import csmae.retrieval.index as ix

    art = copy_artefact(artefacts["index-hnsw"], tmp_path)
    flip_bytes(art / "index.faiss", 40, seed=11)
    faiss = fb.faiss_module()
    called = []
    monkeypatch.setattr(faiss, "read_index", lambda *a, **k: called.append(a))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="index.faiss: sha256 mismatch"):
        ix.SearchIndex.load(art)
    assert not called and time.perf_counter() - t0 < 5
    # in a process limited to 1 GiB of address space above what importing csmae takes
    code = (
        "import resource, sys\n"
        "import csmae.retrieval.backends.faiss as fb\n"
        "import csmae.retrieval.index as ix\n"
        "fb.faiss_module()\n"
        "peak = int(open('/proc/self/status').read().split('VmPeak:')[1].split()[0]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (peak + (1 << 30), resource.RLIM_INFINITY))\n"
        "try:\n"
        "    ix.SearchIndex.load(sys.argv[1])\n"
        "except ValueError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(art)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "index.faiss" in proc.stdout
