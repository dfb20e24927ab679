"""Retriever on the real v1 samples with a tiny model: search by file == search by id, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from csmae.retrieval.retriever import Hit, Retriever

from .conftest import save_tiny


@pytest.fixture(scope="module")
def retriever(v1_index_dir, tiny_model_dir, v1_sources) -> Retriever:
    return Retriever.load(v1_index_dir, model_dir=tiny_model_dir, data=v1_sources)


def _band_files(root, pid, bands):
    return [str(root / pid / f"{pid}_{b}.tif") for b in bands]


def test_search_by_files_equals_search_by_id(retriever, v1_roots):
    ds = retriever.dataset
    pid = ds.ids[1]
    s2_files = _band_files(
        v1_roots[0], pid, ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
    )  # extra bands are ignored
    by_id = retriever.search_by_id(pid, sensor="s2", target="any", k=8, exclude_self=False)
    by_file = retriever.search_by_files(s2_files, sensor="s2", target="any", k=8)
    assert [(h.id, h.sensor) for h in by_file] == [(h.id, h.sensor) for h in by_id]
    np.testing.assert_allclose([h.score for h in by_file], [h.score for h in by_id], atol=1e-4)
    assert (by_id[0].id, by_id[0].sensor) == (pid, "s2") and by_id[0].score == pytest.approx(1, abs=1e-4)
    # S1 files, located through the pair's S1 name
    s1_name = ds.get(pid)["s1_name"]
    s1_files = _band_files(v1_roots[1], s1_name, ("VH", "VV"))  # order of files does not matter
    hits = retriever.search_by_files(s1_files, sensor="s1", target="s1", k=3)
    assert (hits[0].id, hits[0].sensor) == (pid, "s1") and all(h.sensor == "s1" for h in hits)


def test_search_by_arrays_npy_and_npz(retriever, tmp_path):
    ds = retriever.dataset
    pid = ds.ids[2]
    raw = ds.get(pid)["s2"]  # dataset order == model order (default bands)
    np.save(tmp_path / "q.npy", raw)
    np.savez(tmp_path / "bands.npz", **{b: raw[i] for i, b in enumerate(retriever.model.sensors["s2"].bands)})
    np.savez(tmp_path / "one.npz", raw)
    ref = retriever.search_by_id(pid, sensor="s2", k=5, exclude_self=False)
    for f in ("q.npy", "bands.npz", "one.npz"):
        hits = retriever.search_by_files([tmp_path / f], sensor="s2", k=5)
        assert [h.id for h in hits] == [h.id for h in ref], f
    hits = retriever.search_by_arrays(raw, sensor="s2", target="s2", k=2)
    assert isinstance(hits[0], Hit) and hits[0].id == pid and hits[0].overlap == []


def test_search_by_id_excludes_self_and_reports_overlap(retriever):
    pid = retriever.dataset.ids[0]
    hits = retriever.search_by_id(pid, sensor="s1", target="any", k=5)
    assert (pid, "s1") not in [(h.id, h.sensor) for h in hits]
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    q_labels = set(retriever.labels_of(pid, "s1"))
    for h in hits:
        assert set(h.overlap) == q_labels & set(h.labels)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))


def test_items_and_previews(retriever):
    total, rows = retriever.items(sensor="s2", limit=2)
    assert total == 6 and len(rows) == 2 and rows[0]["sensor"] == "s2"
    total_train, _ = retriever.items(split="train")
    assert total_train == 8  # 4 train pairs x 2 sensors
    lab = rows[0]["labels"][0]
    n_lab, rows_lab = retriever.items(label=lab, limit=100)
    assert n_lab >= 1 and all(lab in r["labels"] for r in rows_lab)
    png = retriever.preview_png(rows[0]["id"], "s2")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert retriever.label_names[0] == "Agro-forestry areas" and retriever.sensors == ["s1", "s2"]
    assert retriever.model_info["dim"] == 192


def test_bad_queries_give_clear_errors(retriever, v1_roots, tmp_path):
    pid = retriever.dataset.ids[1]
    with pytest.raises(KeyError, match="no patch"):
        retriever.search_by_id("S2A_nope", sensor="s2")
    with pytest.raises(ValueError, match="target"):
        retriever.search_by_id(pid, sensor="s2", target="s3")
    with pytest.raises(ValueError, match=r"missing band\(s\) \['B05'"):
        files = _band_files(v1_roots[0], pid, ("B02", "B03", "B04", "B08", "B06", "B07", "B8A", "B11", "B12"))
        retriever.search_by_files(files, sensor="s2")
    np.save(tmp_path / "small.npy", np.zeros((10, 64, 64), np.float32))
    with pytest.raises(ValueError, match=r"must be \(10, 120, 120\)"):
        retriever.search_by_files([tmp_path / "small.npy"], sensor="s2")
    np.savez(tmp_path / "wrong.npz", VV=np.zeros((120, 120)), VH=np.zeros((60, 60)))
    with pytest.raises(ValueError, match="band VH has shape"):
        retriever.search_by_files([tmp_path / "wrong.npz"], sensor="s1")
    bad = tmp_path / "x_B02.tif"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="cannot read"):
        retriever.search_by_files([bad], sensor="s2")
    with pytest.raises(ValueError, match="band from the file name"):
        retriever.search_by_files([_rename(tmp_path)], sensor="s2")
    with pytest.raises(ValueError, match="no sensor 's3'"):
        retriever.search_by_arrays(np.zeros((2, 120, 120)), sensor="s3")


def _rename(tmp_path):
    p = tmp_path / "noband.tif"
    p.write_bytes(b"")
    return p


def test_model_without_the_query_sensor(tmp_path_factory, v1_sources):
    from csmae.retrieval.embed import embed_dataset
    from csmae.retrieval.index import build_index

    base = tmp_path_factory.mktemp("s2only")
    model = save_tiny(base / "model", "mae_s2_tiny")
    emb = embed_dataset(model, v1_sources, base / "emb")
    build_index(emb, "exact", base / "idx")
    r = Retriever.load(base / "idx")  # the model recorded in the manifest
    assert r.sensors == ["s2"]
    with pytest.raises(ValueError, match="no sensor 's1'"):
        r.search_by_arrays(np.zeros((2, 120, 120), np.float32), sensor="s1")
    with pytest.raises(ValueError, match="no 's1' items"):
        r.search_by_id(r.items()[1][0]["id"], sensor="s1")


def test_index_from_another_model_is_refused(v1_index_dir, tmp_path):
    other = save_tiny(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="another model"):
        Retriever.load(v1_index_dir, model_dir=other)
    wider = save_tiny(tmp_path / "wider", "csmae_sesd_small")
    with pytest.raises(ValueError, match="another model"):
        Retriever.load(v1_index_dir, model_dir=wider)
