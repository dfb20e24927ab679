"""embed -> index -> search -> evaluate through the CLI on the real reBEN samples and a synthetic store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from csmae.cli import main
from csmae.retrieval import evaluate
from csmae.retrieval.embed import band_permutation, embed_dataset
from csmae.retrieval.embeddings import load_embeddings

from .conftest import save_tiny


def test_cli_pipeline_on_real_samples(tmp_path, tiny_model_dir, reben_sources, capsys):
    emb, idx, rep = tmp_path / "emb", tmp_path / "idx", tmp_path / "report"
    assert main(["embed", str(tiny_model_dir), *reben_sources, "--out", str(emb), "--batch-size", "7"]) == 0
    e = load_embeddings(emb)
    assert len(e) == 36 and e.dim == 192 and e.sensor_names == ["s1", "s2"]
    man = json.loads((emb / "manifest.json").read_text())
    assert man["model"]["sha256"] and man["sensors"]["s2"]["bands"][0] == "B02" and man["count"] == 36
    assert main(["index", str(emb), "--out", str(idx)]) == 0
    pid = e.ids[0]
    capsys.readouterr()
    assert (
        main(
            [
                "search",
                str(idx),
                "--id",
                pid,
                "--sensor",
                "s1",
                "--target",
                "s2",
                "--k",
                "4",
                "--json",
                "--grid",
                str(tmp_path / "grid.png"),
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert len(out["hits"]) == 4 and all(h["sensor"] == "s2" for h in out["hits"])
    assert (tmp_path / "grid.png").stat().st_size > 1000
    assert (
        main(["evaluate", "--embeddings", str(emb), "--out", str(rep), "--ks", "1,5,10", "--grids", "1"]) == 0
    )
    metrics = json.loads((rep / "metrics.json").read_text())
    dirs = metrics["directions"]
    assert set(dirs) == {"s1->s1", "s2->s2", "s1->s2", "s2->s1", "s1->mixed", "s2->mixed"}
    assert set(dirs["s1->s2"]["precision"]) == {"1", "5"}  # 6 test pairs: k=10 skipped with a note
    assert set(dirs["s2->mixed"]["precision"]) == {"1", "5", "10"}
    q, a = e.select(sensor="s1", split="val"), e.select(sensor="s2", split="test")
    want = evaluate(q.vectors, q.labels, a.vectors, a.labels, ks=(5,))
    assert dirs["s1->s2"]["map"]["5"] == pytest.approx(want["map"][5])
    for f in ("metrics.md", "metrics_by_direction.png", "precision_recall_at_k.png", "grid_s1_to_mixed.png"):
        assert (rep / f).exists(), f
    assert "| S1 → S2 |" in (rep / "metrics.md").read_text()
    # nothing overwritten in place
    assert main(["index", str(emb), "--out", str(idx)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_evaluate_from_model_and_dataset_with_self_exclusion(tmp_path, tiny_model_dir, v1_sources):
    rep = tmp_path / "rep"
    assert (
        main(
            [
                "evaluate",
                str(tiny_model_dir),
                *v1_sources,
                "--out",
                str(rep),
                "--queries",
                "all",
                "--archive",
                "all",
                "--ks",
                "1,3",
                "--exclude-own-pair",
                "--grids",
                "0",
            ]
        )
        == 0
    )
    m = json.loads((rep / "metrics.json").read_text())
    assert m["protocol"]["exclude_self"] and m["protocol"]["exclude_own_pair"]
    assert m["protocol"]["n_queries"] == {"s1": 6, "s2": 6}


def test_embed_resumes_after_interruption(tmp_path, tiny_model_dir, reben_sources):
    calls = []

    def crash(done, total):
        calls.append(done)
        if done >= 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_dataset(
            tiny_model_dir, reben_sources, tmp_path / "emb", shard_pairs=4, batch_size=4, on_progress=crash
        )
    assert not (tmp_path / "emb").exists()
    partial = tmp_path / "emb.partial"
    assert sorted(p.name for p in partial.glob("part-*.parquet")) == [  # progress follows the write
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    stamp = (partial / "part-00000.parquet").stat().st_mtime_ns
    seen = []
    embed_dataset(
        tiny_model_dir,
        reben_sources,
        tmp_path / "emb",
        shard_pairs=4,
        batch_size=4,
        on_progress=lambda d, t: seen.append(d),
    )
    assert seen == [12, 16, 18]  # the three finished shards were kept, not recomputed
    assert not partial.exists()
    resumed = load_embeddings(tmp_path / "emb")
    fresh = embed_dataset(  # uninterrupted, reading in a DataLoader worker process
        tiny_model_dir, reben_sources, tmp_path / "fresh", shard_pairs=4, batch_size=4, workers=1
    )
    full = load_embeddings(fresh)
    assert list(resumed.ids) == list(full.ids) and np.array_equal(resumed.vectors, full.vectors)
    assert stamp  # first shard was kept
    with pytest.raises(FileExistsError):
        embed_dataset(tiny_model_dir, reben_sources, tmp_path / "emb")


def test_band_order_is_mapped_by_name(tmp_path, reben_sources):
    from csmae.data import open_dataset
    from csmae.sensors import REFERENCE_S2_BANDS

    model = save_tiny(tmp_path / "ref", s2_bands=list(REFERENCE_S2_BANDS))
    ds_default = open_dataset(*reben_sources, split="val")  # default band order B02..B8A,B11,B12
    a = load_embeddings(embed_dataset(model, [], tmp_path / "a", dataset=ds_default, precision="fp32"))
    b = load_embeddings(embed_dataset(model, reben_sources, tmp_path / "b", split="val", precision="fp32"))
    assert np.allclose(a.vectors, b.vectors, atol=1e-5)
    assert band_permutation(["B02", "B03"], ["B02", "B03"], sensor="s2") is None
    assert band_permutation(["B02", "B03", "B04"], ["B04", "B02"], sensor="s2").tolist() == [2, 0]
    with pytest.raises(ValueError, match=r"needs band\(s\) \['B8A'\]"):
        band_permutation(["B02"], ["B02", "B8A"], sensor="s2")


def test_pipeline_on_synthetic_store(tmp_path, tiny_model_dir):
    from csmae.data.synth import write_synthetic
    from csmae.retrieval.index import build_index
    from csmae.retrieval.protocol import evaluate_embeddings
    from csmae.retrieval.retriever import Retriever

    paths = write_synthetic(tmp_path / "store", n=40, seed=0, format="store")
    emb = embed_dataset(tiny_model_dir, paths, tmp_path / "emb", batch_size=16)
    build_index(emb, "hnsw", tmp_path / "idx")
    r = Retriever.load(tmp_path / "idx")
    pid = r.items(sensor="s2", limit=1)[1][0]["id"]
    hits = r.search_by_id(pid, sensor="s2", target="s1", k=5)
    assert len(hits) == 5
    res = evaluate_embeddings(emb, ks=(1, 3))
    assert len(res["directions"]) == 6


def test_empty_dataset_and_unknown_sensor(tmp_path, tiny_model_dir, reben_sources):
    with pytest.raises(ValueError, match="no sensor"):
        embed_dataset(tiny_model_dir, reben_sources, tmp_path / "x", sensors=["s3"])


def test_killed_evaluate_resumes_and_cleans_up(tmp_path, tiny_model_dir, reben_sources, monkeypatch, capsys):
    import csmae.retrieval.eval_stream as protocol  # where the searches run

    emb = tmp_path / "emb"
    embed_dataset(tiny_model_dir, reben_sources, emb)
    args = ["evaluate", "--embeddings", str(emb), "--ks", "1,5", "--grids", "0"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    assert not (tmp_path / "whole.partial").exists()
    real, calls = protocol.exact_topk, []

    def killed_in_third_search(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(protocol, "exact_topk", killed_in_third_search)
    rep = tmp_path / "rep"
    assert main([*args, "--out", str(rep)]) == 130  # the CLI reports the interruption
    assert not rep.exists() and len(list((tmp_path / "rep.partial").glob("*.npz"))) == 2
    calls.clear()
    capsys.readouterr()
    assert main([*args, "--out", str(rep)]) == 0
    assert "resuming from the finished searches" in capsys.readouterr().out
    assert len(calls) == 2 and not (tmp_path / "rep.partial").exists()
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (rep, tmp_path / "whole"))
    assert got["directions"] == want["directions"]
    # an existing report is refused before any search, not after it
    calls.clear()
    assert main([*args, "--out", str(rep)]) == 1
    assert "already exists" in capsys.readouterr().err and not calls


def test_loading_shards_into_one_array_and_a_shard_that_disagrees(tmp_path, tiny_model_dir, reben_sources):
    import shutil

    from csmae.retrieval.embeddings import read_shard

    emb_dir = embed_dataset(tiny_model_dir, reben_sources, tmp_path / "emb", shard_pairs=4)
    man = json.loads((emb_dir / "manifest.json").read_text())
    files = [emb_dir / s["file"] for s in man["shards"]]
    assert len(files) == 5 and all("rows" in s for s in man["shards"])
    loaded = load_embeddings(emb_dir)
    want = np.concatenate([read_shard(f)["vectors"] for f in files])  # shard by shard, independently
    np.testing.assert_array_equal(loaded.vectors, want)
    # a folder whose manifest lacks per-shard rows (another writer) loads the same
    for s in man["shards"]:
        del s["rows"]
    (emb_dir / "manifest.json").write_text(json.dumps(man))
    np.testing.assert_array_equal(load_embeddings(emb_dir).vectors, want)
    # a shard replaced by another of a different size: named, never silently misplaced
    man = json.loads((emb_dir / "manifest.json").read_text())
    for s, f in zip(man["shards"], files):
        s["rows"] = len(read_shard(f)["ids"])
    (emb_dir / "manifest.json").write_text(json.dumps(man))
    shutil.copy(files[0], files[-1])
    with pytest.raises(ValueError, match=rf"{files[-1].name} is damaged \(longer than recorded"):
        load_embeddings(emb_dir)  # the recorded checksums catch it first
    man.pop("checksums")  # an older folder without checksums: the row count still names the shard
    (emb_dir / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match=rf"{files[-1].name}: 8 rows of D=192, but manifest.json says 4 "):
        load_embeddings(emb_dir)
