"""``csmae evaluate`` in bounded memory (#20): the protocol's searches block by block over an
embeddings folder read shard by shard give exactly today's whole-array search (``exact_topk`` of
every query over the whole archive) and the brute-force ranking; the peak RSS of the CLI does not
grow with the folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import csmae.retrieval.eval_stream as es
from csmae.retrieval.artifacts import base_manifest, write_json_atomic
from csmae.retrieval.embeddings import load_embeddings, write_shard
from csmae.retrieval.protocol import (
    cross_model_embeddings,
    cross_model_source,
    evaluation_source,
    run_protocol,
)
from csmae.retrieval.resume import array_digest
from csmae.retrieval.topk import exact_topk, l2_normalize

from .brute import rank

ROOT = Path(__file__).resolve().parents[2]


def write_folder(out: Path, *, pairs: int, shard_pairs: int, d: int, seed: int = 0, ties: bool = False,
                 splits=(0.4, 0.3, 0.3), model: str = "m") -> Path:  # fmt: skip
    """``pairs`` pairs (s1, s2 rows interleaved) in shards of ``shard_pairs`` pairs; random splits.
    ``ties``: vectors drawn from a few values, so that many scores tie exactly."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    entries = []
    names = np.array(["train", "val", "test"], dtype=object)
    for j, lo in enumerate(range(0, pairs, shard_pairs)):
        n = min(pairs, lo + shard_pairs) - lo
        if ties:
            v = rng.integers(-1, 2, size=(2 * n, d)).astype(np.float32)
            v[~v.any(axis=1), 0] = 1.0
        else:
            v = rng.normal(size=(2 * n, d)).astype(np.float32)
        sp = names[np.searchsorted(np.cumsum(splits), rng.random(n), side="right").clip(0, 2)]
        lab = rng.random((n, 19)) < 0.2
        write_shard(out / f"part-{j:05d}.parquet", ids=[f"p{lo + i:06d}" for i in range(n) for _ in range(2)],
                    sensors=["s1", "s2"] * n, splits=[s for s in sp for _ in range(2)],
                    labels=np.repeat(lab, 2, axis=0), vectors=v)  # fmt: skip
        entries.append({"file": f"part-{j:05d}.parquet", "pairs": n, "rows": 2 * n})
    from csmae.integrity import checksum_files

    sums = checksum_files(out, [e["file"] for e in entries])
    man = base_manifest("csmae-embeddings", model={"name": model, "sha256": "c" * 64}, dim=d,
                        sensors={"s1": {"bands": ["VV"]}, "s2": {"bands": ["B02"]}}, count=2 * pairs,
                        shards=entries, checksums=sums)  # fmt: skip
    write_json_atomic(out / "manifest.json", man)
    return out


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Budgets of a few rows: many query chunks and archive blocks (k + 1 rows at least)."""
    monkeypatch.setattr(es, "QUERY_BYTES", 4 * 8 * 61)  # 61 queries of D = 8
    monkeypatch.setattr(es, "ARCHIVE_BYTES", 4 * 8 * 21)  # ~21 archive rows (21 at least: k = 20)
    monkeypatch.setattr(es, "TILE_BYTES", 8 * 23 * 16)  # 16 queries per score tile


def whole_array_search(emb, qs, a_s, query_split, archive_split, k, exclude_self, own_pair):
    """Today's search of one direction: exact_topk of every query over the whole archive."""
    q = emb.select(sensor=qs, split=query_split)
    a = emb.select(sensor=a_s, split=archive_split)
    excl = None
    if exclude_self and (qs == a_s or own_pair):
        pos = {pid: i for i, pid in enumerate(a.ids.tolist())}
        excl = np.array([pos.get(pid, -1) for pid in q.ids.tolist()])[:, None]
    return exact_topk(l2_normalize(q.vectors), l2_normalize(a.vectors), k, exclude=excl, precision="fp32")


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("splits", [("val", "test", False), ("all", "all", False), ("all", "all", True)])
def test_block_by_block_equals_the_whole_array_search(tmp_path, tiny_blocks, monkeypatch, ties, splits):
    qsplit, asplit, own_pair = splits
    folder = write_folder(tmp_path / "emb", pairs=150, shard_pairs=17, d=8, ties=ties)
    emb = load_embeddings(folder)
    shapes, real = [], es.exact_topk
    monkeypatch.setattr(es, "exact_topk", lambda q, a, *x, **kw: (shapes.append((len(q), len(a))),
                                                                  real(q, a, *x, **kw))[1])  # fmt: skip
    got = run_protocol(evaluation_source(folder), query_split=qsplit, archive_split=asplit, ks=[1, 5, 20],
                       exclude_own_pair=own_pair, precision="fp32")  # fmt: skip
    assert len(shapes) >= 2 * 4  # archive blocks (x query chunks) per direction
    assert len({q for q, _ in shapes}) > 1 or qsplit != "all"  # 150 queries: chunks of 61
    assert min(a for _, a in shapes) >= 21  # every block gives its full top-20 (+1 excluded)
    mem = run_protocol(emb, query_split=qsplit, archive_split=asplit, ks=[1, 5, 20],
                       exclude_own_pair=own_pair, precision="bf16")  # fmt: skip
    for qs in ("s1", "s2"):
        for a_s in ("s1", "s2"):
            name = f"{qs}->{a_s}"
            s, i = whole_array_search(emb, qs, a_s, qsplit, asplit, 20, qsplit == "all", own_pair)
            np.testing.assert_array_equal(got.rankings[name][1], i)
            np.testing.assert_array_equal(got.rankings[name][0], s)  # float64 scores, bit for bit
            np.testing.assert_array_equal(mem.rankings[name][1], i)
    assert got.metrics == mem.metrics
    for name in got.rankings:
        np.testing.assert_array_equal(got.rankings[name][1], mem.rankings[name][1])
    if ties:  # the blocks cut through runs of equal scores: archive order still breaks them
        s = got.rankings["s1->s2"][0]
        assert (s[:, 1:] == s[:, :-1]).mean() > 0.3


def test_blocks_match_a_brute_force_ranking(tmp_path, tiny_blocks):
    folder = write_folder(tmp_path / "emb", pairs=120, shard_pairs=7, d=8, ties=True)
    emb = load_embeddings(folder)
    res = run_protocol(evaluation_source(folder), query_split="all", archive_split="all", ks=[12],
                       precision="fp32")  # fmt: skip
    s1 = emb.select(sensor="s1")
    s2 = emb.select(sensor="s2")
    qv = l2_normalize(s1.vectors).astype(float).tolist()
    for name, a, own in (("s1->s1", s1, True), ("s1->s2", s2, False)):
        av = l2_normalize(a.vectors).astype(float).tolist()
        for qi in range(0, len(qv), 9):
            want = rank(qv[qi], av, frozenset([qi]) if own else frozenset())[:12]
            assert res.rankings[name][1][qi].tolist() == want, (name, qi)


def test_resume_keys_follow_the_vectors_and_the_rows(tmp_path):
    """In memory, and for a folder without checksums: the digest of the normalised vectors (as
    before, one pass). A folder with checksums: its verified shard checksums and the rows (no pass)."""
    folder = write_folder(tmp_path / "emb", pairs=300, shard_pairs=41, d=12)
    emb = load_embeddings(folder)
    pos = {s: np.flatnonzero(emb.mask(sensor=s, split="val")) for s in ("s1", "s2")}
    whole = {s: array_digest(l2_normalize(emb.select(sensor=s, split="val").vectors)) for s in pos}
    assert es.fingerprints(es.MemorySource(emb), pos) == whole
    keyed = es.fingerprints(evaluation_source(folder), pos)
    assert keyed == es.fingerprints(evaluation_source(folder), pos) and keyed != whole
    assert es.fingerprints(evaluation_source(folder), {"s1": pos["s1"][1:]})["s1"] != keyed["s1"]
    man = json.loads((folder / "manifest.json").read_text())
    unverified = dict(man)
    unverified.pop("checksums")
    write_json_atomic(folder / "manifest.json", unverified)
    assert es.fingerprints(evaluation_source(folder), pos) == whole  # streamed, same digest
    from csmae.integrity import checksum_files
    from csmae.retrieval.embeddings import read_shard

    part = read_shard(folder / "part-00000.parquet")
    vectors = part["vectors"].copy()
    vectors[0] += 1.0  # one vector changes: the shard's checksum and the key change
    write_shard(folder / "part-00000.parquet", ids=list(part["ids"]), sensors=list(part["sensors"]),
                splits=list(part["splits"]), labels=part["labels"], vectors=vectors)  # fmt: skip
    man["checksums"] = checksum_files(folder, [e["file"] for e in man["shards"]])
    write_json_atomic(folder / "manifest.json", man)
    assert es.fingerprints(evaluation_source(folder), pos)["s1"] != keyed["s1"]


def test_cross_model_source_equals_cross_model_embeddings(tmp_path, tiny_blocks):
    a = write_folder(tmp_path / "a", pairs=90, shard_pairs=13, d=8, seed=1, model="A")
    b = write_folder(tmp_path / "b", pairs=90, shard_pairs=13, d=8, seed=1, model="B")
    # the same pairs, splits and labels (same seed); other vectors
    man = json.loads((b / "manifest.json").read_text())
    rng = np.random.default_rng(9)
    for sh in man["shards"]:
        from csmae.retrieval.embeddings import read_shard

        part = read_shard(b / sh["file"])
        write_shard(b / sh["file"], ids=list(part["ids"]), sensors=list(part["sensors"]),
                    splits=list(part["splits"]), labels=part["labels"],
                    vectors=rng.normal(size=part["vectors"].shape).astype(np.float32))  # fmt: skip
    man.pop("checksums")
    write_json_atomic(b / "manifest.json", man)
    srcs = {"s1": str(a), "s2": str(b)}
    mem = cross_model_embeddings({"s1": load_embeddings(a), "s2": load_embeddings(b)}, sources=srcs)
    src = cross_model_source({"s1": evaluation_source(a), "s2": evaluation_source(b)}, sources=srcs)
    assert src.manifest == mem.manifest and src.dim == mem.dim
    assert (src.rows.ids == mem.ids).all() and (src.rows.sensors == mem.sensors).all()
    got = run_protocol(src, ks=[3, 10], precision="fp32")
    want = run_protocol(mem, ks=[3, 10], precision="fp32")
    assert got.metrics == want.metrics and got.protocol == want.protocol
    for name in want.rankings:
        np.testing.assert_array_equal(got.rankings[name][1], want.rankings[name][1])


def test_nonfinite_vectors_in_the_evaluated_splits_are_refused_by_name(tmp_path):
    folder = write_folder(tmp_path / "emb", pairs=40, shard_pairs=9, d=8)
    emb = load_embeddings(folder)
    at = int(np.flatnonzero((emb.sensors == "s2") & (emb.splits == "test"))[0])
    emb.vectors[at, 3] = np.nan
    with pytest.raises(ValueError, match=f"1 s2 archive vector.*{emb.ids[at]}/s2"):
        run_protocol(emb, ks=[3])
    train = int(np.flatnonzero(emb.splits == "train")[0])
    emb.vectors[at, 3] = 0.0
    emb.vectors[train] = np.inf  # outside the evaluated splits: no matter
    assert run_protocol(emb, ks=[3]).metrics


PEAK = """
import resource, sys
import csmae.retrieval.eval_stream as es
es.QUERY_BYTES, es.ARCHIVE_BYTES, es.TILE_BYTES = 2 << 20, 1 << 20, 1 << 20  # archives exceed them
from csmae.cli import main
if sys.argv[1] == "evaluate":
    assert main(["evaluate", "--embeddings", sys.argv[2], "--out", sys.argv[3], "--ks", "5,10",
                 "--grids", "0", "--search-precision", "fp32"]) == 0
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak_rss(*argv: str) -> int:
    r = subprocess.run([sys.executable, "-c", PEAK, *argv], capture_output=True, text=True, timeout=900,
                       cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin",
                                      "OMP_NUM_THREADS": "2"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.split()[-1])


def test_csmae_evaluate_peak_rss_does_not_grow_with_the_folder(tmp_path):
    """Two folders, 24k and 96k pairs x 2 sensors x D 256 (49 and 197 MB of vectors), 4 % of the
    pairs in each of val and test. Loading the folder grew the peak by ~1.5x the added vectors
    (measured before, at D 256 and 384); block by block it grows only by the per-row columns (ids,
    labels: ~125 B a row)."""
    sp = (0.92, 0.04, 0.04)
    small = write_folder(tmp_path / "small", pairs=24_000, shard_pairs=4096, d=256, splits=sp)
    large = write_folder(tmp_path / "large", pairs=96_000, shard_pairs=4096, d=256, splits=sp)
    grown_vectors = (96_000 - 24_000) * 2 * 256 * 4
    p_small = peak_rss("evaluate", str(small), str(tmp_path / "r1"))
    p_large = peak_rss("evaluate", str(large), str(tmp_path / "r2"))
    assert p_large - p_small < 0.4 * grown_vectors, (p_large - p_small) / grown_vectors
    rep = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    assert rep["protocol"]["n_archive"]["s1"] > 3000


def test_queries_kept_from_the_first_pass_give_the_same_results(tmp_path, monkeypatch):
    """``csmae evaluate`` keeps the query split's vectors while it scans the folder (no second pass
    for them) when they fit the query budget; the results do not change, and past the budget the
    queries are read shard by shard as before."""
    folder = write_folder(tmp_path / "emb", pairs=200, shard_pairs=23, d=8)
    want = run_protocol(load_embeddings(folder), ks=[3, 10], precision="fp32")
    kept = evaluation_source(folder, query_split="val")
    assert kept.se.kept is not None and len(kept.se.kept[0]) == int((kept.rows.splits == "val").sum())
    passes = []
    real = kept.se.vectors
    monkeypatch.setattr(kept.se, "vectors", lambda: (passes.append(1), real())[1])
    got = run_protocol(kept, ks=[3, 10], precision="fp32")
    assert len(passes) == 2  # one archive pass per query sensor, none for the queries
    assert got.metrics == want.metrics
    for name in want.rankings:
        np.testing.assert_array_equal(got.rankings[name][1], want.rankings[name][1])
    monkeypatch.setattr(es, "QUERY_BYTES", 4 * 8 * 50)  # the val rows (~120) are over the budget
    assert evaluation_source(folder, query_split="val").se.kept is None
