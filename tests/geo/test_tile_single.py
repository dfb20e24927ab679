"""Single-sensor stores from ``csmae tile`` through embed -> index -> search (tiny model).

The main use: an S1 query (a cloudy day) searched against an S2-only archive, and the reverse.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.geo.tile_fixtures import S1_NAME, load_real_mosaic, store_arrays, write_aligned


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from csmae.data.scenes import tile_scenes

    root = tmp_path_factory.mktemp("single")
    write_aligned(root, load_real_mosaic())
    tile_scenes(root / "s2only", s2=[str(root / "s2")])
    tile_scenes(root / "s1only", s1=[str(root / "s1")])
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.retrieval.conftest import save_tiny

    return save_tiny(tmp_path_factory.mktemp("model") / "tiny")


def _cosine_topk(q: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
    qn = q / np.linalg.norm(q)
    bn = base / np.linalg.norm(base, axis=1, keepdims=True)
    return np.argsort(-(bn @ qn), kind="stable")[:k]


def test_single_sensor_stores_open_as_such(stores):
    from csmae.data import open_dataset

    s2 = open_dataset(stores / "s2only")
    s1 = open_dataset(stores / "s1only")
    assert list(s2.sensors) == ["s2"] and list(s1.sensors) == ["s1"]
    assert len(s2) == len(s1) == 6
    assert s1.ids[0] == f"{S1_NAME}_r000_c000"  # S1 only: the S1 grid (10 m UTM) defines the patches
    assert "s1" not in s2[0] and "s2" not in s1[0]
    assert s2[0]["datetime"]["s1"] is None and s2[0]["scene"]["s2"] == "T33UUP_20170613T101031"
    assert s1[0]["datetime"] == {"s1": "2017-06-13T16:50:43Z", "s2": None}
    man = json.loads((stores / "s1only" / "manifest.json").read_text())
    assert list(man["sensors"]) == ["s1"] and man["geo"] is True


def test_embed_index_search_with_one_sensor(stores, model_dir, tmp_path, capsys):
    from csmae.cli import main
    from csmae.retrieval.embeddings import load_embeddings
    from csmae.retrieval.index import build_index

    for name in ("s2only", "s1only"):
        assert main(["embed", str(model_dir), str(stores / name), "--out", str(tmp_path / f"emb_{name}"),
                     "--precision", "fp32"]) == 0
    e2 = load_embeddings(tmp_path / "emb_s2only")
    e1 = load_embeddings(tmp_path / "emb_s1only")
    assert set(e2.sensors) == {"s2"} and set(e1.sensors) == {"s1"} and len(e2) == len(e1) == 6
    build_index(tmp_path / "emb_s2only", "exact", tmp_path / "idx")
    capsys.readouterr()
    # S2 -> S2 by archive id
    assert main(["search", str(tmp_path / "idx"), "--id", e2.ids[0], "--sensor", "s2", "--target", "s2",
                 "--k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    expect = [i for i in _cosine_topk(e2.vectors[0], e2.vectors, 4) if i != 0][:3]
    assert [h["id"] for h in hits] == [e2.ids[i] for i in expect]
    # S1 query (a patch of the S1-only store, as a file) against the S2-only archive
    arrays, ids = store_arrays(stores / "s1only")
    np.save(tmp_path / "q.npy", arrays["s1"][2])
    assert main(["search", str(tmp_path / "idx"), "--file", str(tmp_path / "q.npy"), "--sensor", "s1",
                 "--target", "s2", "--k", "6", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    q = e1.vectors[list(e1.ids).index(ids[2])]
    assert [h["id"] for h in hits] == [e2.ids[i] for i in _cosine_topk(q, e2.vectors, 6)]
    assert all(h["sensor"] == "s2" for h in hits)


def test_s1_only_in_geographic_coordinates_gets_a_utm_10m_grid(tmp_path):
    """S1 delivered in EPSG:4326: the patches are cut on a 10 m grid of the scene's UTM zone."""
    from affine import Affine

    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.example import _write

    t = Affine(1e-4, 0, 13.70, 0, -1e-4, 48.25)  # ~7.4 x 11 m pixels at 48 N
    (tmp_path / "s1").mkdir()
    for p, v in (("VV", 0.05), ("VH", 0.01)):
        _write(tmp_path / "s1" / f"S1A_IW_GRDH_1SDV_20170613T165043_{p}.tif",
               [np.full((400, 500), v, np.float32)], crs="EPSG:4326", transform=t)
    res = tile_scenes(tmp_path / "store", s1=[str(tmp_path / "s1")])
    arrays, ids = store_arrays(tmp_path / "store")
    man = json.loads((tmp_path / "store" / "manifest.json").read_text())
    grid = man["tiling"]["scenes"][0]["grid"]
    assert grid["crs"] == "EPSG:32633" and grid["transform"][0] == 10.0 and grid["transform"][4] == -10.0
    assert res.patches == len(ids) >= 6  # 3.7 x 4.4 km of data, minus the rim outside the rotated footprint
    from csmae.data.scenes.radiometry import S1_DB_FLOOR

    valid = arrays["s1"] != np.float32(S1_DB_FLOOR)  # rim patches keep < 10% nodata pixels (the floor)
    assert valid.mean() > 0.95 and valid.reshape(len(ids), -1).mean(axis=1).min() >= 0.9
    np.testing.assert_allclose(arrays["s1"][:, 0][valid[:, 0]], 10 * np.log10(0.05), atol=1e-4)
    np.testing.assert_allclose(arrays["s1"][:, 1][valid[:, 1]], 10 * np.log10(0.01), atol=1e-4)
