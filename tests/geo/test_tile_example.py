"""README "Your own imagery": scripts/make_example_scene.py -> tile -> embed -> index -> search."""

from __future__ import annotations

import json

import numpy as np

from tests.geo.tile_fixtures import store_arrays


def _script():
    from tests.example_scene import example_scene_script

    return example_scene_script()


def test_readme_example_from_scenes_to_search(tmp_path, capsys):
    from csmae.cli import main
    from csmae.data.scenes.example import synthetic_scene
    from tests.retrieval.conftest import save_tiny

    ex = _script()
    assert ex.main([str(tmp_path / "scenes")]) == 0
    scenes = tmp_path / "scenes"
    safe = next(scenes.glob("*.SAFE"))
    assert main(["tile", "--s2", str(safe), "--s1", str(scenes / "s1"), "--out", str(tmp_path / "store"),
                 "--scl", "--max-days", "3"]) == 0
    assert main(["tile", "--stac", str(scenes / "stac" / "s2.json"), str(scenes / "stac" / "s1.json"),
                 "--out", str(tmp_path / "store_stac"), "--scl"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "11 patches, 1 skipped" in out
    a, ids = store_arrays(tmp_path / "store")
    b, ids_stac = store_arrays(tmp_path / "store_stac")
    assert [i.split("_r")[-1] for i in ids] == [i.split("_r")[-1] for i in ids_stac]
    np.testing.assert_array_equal(a["s2"], b["s2"])
    np.testing.assert_array_equal(a["s1"], b["s1"])
    assert f"{ids[0].rsplit('_r', 1)[0]}_r000_c001" not in ids  # the cloudy patch (SCL 9) is skipped
    # PB 05.09 DN (offset -1000) came back to the pre-2022 DN the synthetic scene was made of
    s2, _ = synthetic_scene(3, 4, 0)
    np.testing.assert_array_equal(a["s2"][0, 0], s2["B02"][:120, :120])
    assert -30 < float(np.median(a["s1"][:, 0])) < -5  # dB after the linear-power warp
    # README: embed -> index -> search (S1 query against the S2 side of the archive)
    model = save_tiny(tmp_path / "model")
    assert main(["embed", str(model), str(tmp_path / "store"), "--out", str(tmp_path / "emb")]) == 0
    assert main(["index", str(tmp_path / "emb"), "--out", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "--id", ids[0], "--sensor", "s1", "--target", "s2",
                 "--k", "5", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert len(hits) == 5 and {h["id"] for h in hits} <= set(ids) and all(h["sensor"] == "s2" for h in hits)
    # README: by place (the point lies in patch r001_c001), hits as GeoJSON with the patches' footprints
    assert main(["search", str(tmp_path / "idx"), "--at=13.8338,48.623", "--sensor", "s1", "--target", "s2",
                 "--k", "5", "--geojson", str(tmp_path / "hits.geojson")]) == 0
    fc = json.loads((tmp_path / "hits.geojson").read_text())
    query = [f for f in fc["features"] if f["properties"]["role"] == "query"]
    assert len(query) == 1 and query[0]["properties"]["id"].endswith("_r001_c001")
    lon, lat = np.asarray(query[0]["geometry"]["coordinates"][0]).T
    assert lon.min() < 13.8338 < lon.max() and lat.min() < 48.623 < lat.max()
    assert len(fc["features"]) == 6
