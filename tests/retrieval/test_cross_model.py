"""Cross-model pairs (S1 items from one model's embeddings, S2 items from another's) and the
precision of the descriptors `csmae evaluate` computes, against a brute-force evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from csmae.cli import main
from csmae.retrieval.artifacts import base_manifest, write_json_atomic
from csmae.retrieval.embeddings import KIND, load_embeddings, write_shard
from csmae.retrieval.metrics import METRICS
from csmae.retrieval.protocol import cross_model_embeddings, run_protocol
from csmae.retrieval.topk import l2_normalize

from .brute import metrics_all, rank

N_PAIRS, D = 30, 6
SPLITS = ("train", "val", "test")


def _write_folder(
    path: Path, *, name: str, seed: int, order: np.ndarray, dim: int = D, labels=None, splits=None
):
    """An embeddings folder of N_PAIRS pairs (both sensors, rows in pair ``order``); returns its vectors."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i:03d}" for i in range(N_PAIRS)]
    sp = splits or [SPLITS[i % 3] for i in range(N_PAIRS)]
    lab = labels if labels is not None else np.random.default_rng(99).random((N_PAIRS, 19)) < 0.25
    vec = rng.normal(size=(N_PAIRS, 2, dim)).astype(np.float32)
    path.mkdir(parents=True)
    write_shard(
        path / "part-00000.parquet",
        ids=[ids[i] for i in order for _ in range(2)],
        sensors=["s1", "s2"] * len(order),
        splits=[sp[i] for i in order for _ in range(2)],
        labels=np.repeat(lab[order], 2, axis=0),
        vectors=vec[order].reshape(-1, dim),
    )
    n = len(order)
    man = base_manifest(
        KIND,
        model={"name": name, "variant": "mae", "dim": dim, "sha256": name * 4},
        dim=dim,
        sensors={"s1": {}, "s2": {}},
        precision="fp32",
        count=2 * n,
        shards=[{"file": "part-00000.parquet", "pairs": n, "rows": 2 * n}],
    )
    write_json_atomic(path / "manifest.json", man)
    return {"ids": ids, "splits": sp, "labels": lab, "vectors": vec}


def _brute(queries, archive, ks):
    """Brute-force metrics of (vectors, label sets) queries against an archive, in the given order."""
    qv = l2_normalize(np.asarray(queries[0])).astype(float).tolist()
    av = l2_normalize(np.asarray(archive[0])).astype(float).tolist()
    ranked = [[archive[1][j] for j in rank(v, av)] for v in qv]
    return {k: metrics_all(queries[1], ranked, k) for k in ks}


@pytest.fixture
def two_models(tmp_path):
    a = _write_folder(tmp_path / "mae_s1", name="mae_s1", seed=1, order=np.arange(N_PAIRS))
    # the second model's folder lists the pairs in another order: pairs are matched by id
    b = _write_folder(
        tmp_path / "mae_s2", name="mae_s2", seed=2, order=np.random.default_rng(3).permutation(N_PAIRS)
    )
    return tmp_path / "mae_s1", a, tmp_path / "mae_s2", b


def _expected(a, b, ks):
    """Every direction from the raw arrays: S1 items described by model a, S2 items by model b."""
    sets = [set(np.flatnonzero(x).tolist()) for x in a["labels"]]
    val = [i for i in range(N_PAIRS) if a["splits"][i] == "val"]
    test = [i for i in range(N_PAIRS) if a["splits"][i] == "test"]
    vec = {"s1": a["vectors"][:, 0], "s2": b["vectors"][:, 1]}
    q = {s: (vec[s][val], [sets[i] for i in val]) for s in vec}
    arch = {s: (vec[s][test], [sets[i] for i in test]) for s in vec}
    arch["mixed"] = (np.concatenate([arch["s1"][0], arch["s2"][0]]), arch["s1"][1] + arch["s2"][1])
    return {f"{qs}->{as_}": _brute(q[qs], arch[as_], ks) for qs in q for as_ in ("s1", "s2", "mixed")}


def _assert_metrics(got, want, ks):
    assert set(got) == set(want)
    for name in want:
        for k in ks:
            for m in METRICS:
                assert float(
                    got[name][m][str(k)] if str(k) in got[name][m] else got[name][m][k]
                ) == pytest.approx(want[name][k][m], abs=1e-12), (name, m, k)


def test_cross_model_protocol_matches_brute_force(two_models):
    a_dir, a, b_dir, b = two_models
    emb = cross_model_embeddings(
        {"s1": load_embeddings(a_dir), "s2": load_embeddings(b_dir)},
        sources={"s1": str(a_dir), "s2": str(b_dir)},
    )
    ks = [1, 3, 5]
    res = run_protocol(emb, ks=ks)
    _assert_metrics(res.metrics, _expected(a, b, ks), ks)
    per = res.protocol["model"]["per_sensor"]
    assert per["s1"]["name"] == "mae_s1" and per["s2"]["name"] == "mae_s2"
    assert per["s1"]["embeddings"] == str(a_dir) and res.protocol["embedding_precision"] == "fp32"


def test_cli_cross_model_report_records_both_models(two_models, tmp_path):
    a_dir, a, b_dir, b = two_models
    rep = tmp_path / "rep"
    args = [
        "evaluate",
        "--embeddings",
        f"s1={a_dir}",
        f"s2={b_dir}",
        "--out",
        str(rep),
        "--ks",
        "1,5",
        "--grids",
        "0",
    ]
    assert main(args) == 0
    m = json.loads((rep / "metrics.json").read_text())
    _assert_metrics(m["directions"], _expected(a, b, [1, 5]), [1, 5])
    assert {s: v["name"] for s, v in m["protocol"]["model"]["per_sensor"].items()} == {
        "s1": "mae_s1",
        "s2": "mae_s2",
    }
    man = json.loads((rep / "manifest.json").read_text())
    assert man["embeddings"] == {"s1": str(a_dir.resolve()), "s2": str(b_dir.resolve())}
    md = (rep / "metrics.md").read_text()
    assert "- S1: mae_s1" in md and "- S2: mae_s2" in md and "Descriptors computed in fp32" in md


def test_cross_model_disagreements_are_clear_errors(tmp_path, capsys):
    base = _write_folder(tmp_path / "a", name="a", seed=1, order=np.arange(N_PAIRS))
    lab = base["labels"].copy()
    lab[4, 0] = ~lab[4, 0]
    _write_folder(tmp_path / "labels", name="b", seed=2, order=np.arange(N_PAIRS), labels=lab)
    sp = list(base["splits"])
    sp[7] = "train" if sp[7] != "train" else "val"
    _write_folder(tmp_path / "splits", name="c", seed=3, order=np.arange(N_PAIRS), splits=sp)
    _write_folder(tmp_path / "dim", name="d", seed=4, order=np.arange(N_PAIRS), dim=D + 2)
    _write_folder(tmp_path / "fewer", name="e", seed=5, order=np.arange(N_PAIRS - 1))
    a = load_embeddings(tmp_path / "a")
    cases = {
        "labels": "different labels.*p004",
        "splits": "different splits.*p007",
        "dim": "one dimension",
        "fewer": "different pairs.*p029",
    }
    for folder, msg in cases.items():
        with pytest.raises(ValueError, match=msg):
            cross_model_embeddings(
                {"s1": a, "s2": load_embeddings(tmp_path / folder)}, sources={"s1": "a", "s2": folder}
            )
    only_s1 = a.select(sensor="s1")
    with pytest.raises(ValueError, match="has no s2 vectors"):
        cross_model_embeddings({"s1": a, "s2": only_s1})
    for bad in (["s1=" + str(tmp_path / "a"), str(tmp_path / "a")], ["s1=x", "s1=y"]):
        assert main(["evaluate", "--embeddings", *bad, "--out", str(tmp_path / "r")]) != 0
        assert "--embeddings" in capsys.readouterr().err


def test_evaluate_embeds_in_fp32_by_default_and_bf16_on_request(tmp_path, tiny_model_dir, v1_sources):
    from csmae.retrieval.embed import embed_dataset

    common = ["--queries", "all", "--archive", "all", "--ks", "1,3", "--grids", "0"]
    rep = tmp_path / "fp32"
    assert main(["evaluate", str(tiny_model_dir), *v1_sources, "--out", str(rep), *common]) == 0
    m = json.loads((rep / "metrics.json").read_text())
    assert m["protocol"]["embedding_precision"] == "fp32"
    ref = load_embeddings(embed_dataset(tiny_model_dir, v1_sources, tmp_path / "ref", precision="fp32"))
    got = load_embeddings(tmp_path / "fp32.embeddings")
    np.testing.assert_array_equal(got.vectors, ref.vectors)
    # descriptors of the other precision are not silently reused
    args = [
        "evaluate",
        str(tiny_model_dir),
        *v1_sources,
        "--out",
        str(tmp_path / "b"),
        "--precision",
        "bf16",
        "--embeddings-out",
        str(tmp_path / "fp32.embeddings"),
        *common,
    ]
    assert main(args) != 0
    rep = tmp_path / "bf16"
    assert (
        main(
            ["evaluate", str(tiny_model_dir), *v1_sources, "--out", str(rep), "--precision", "bf16", *common]
        )
        == 0
    )
    assert json.loads((rep / "metrics.json").read_text())["protocol"]["embedding_precision"] == "bf16"
    assert "Descriptors computed in bf16" in (rep / "metrics.md").read_text()
