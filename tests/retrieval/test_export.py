"""``csmae export``: an area's items, footprints and descriptors as GeoParquet (geopandas opens it).

Reference: the embeddings folder the index was built from, filtered by shapely/datetime loops.
"""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_export_bbox_and_period_match_brute_force(timeline_index, tmp_path, capsys):
    import geopandas as gpd
    import shapely

    from csmae.cli import main
    from csmae.retrieval.embeddings import load_embeddings

    index, emb_dir = timeline_index
    e = load_embeddings(emb_dir)
    geoms = shapely.from_wkb(list(e.meta["geometry"]))
    c = geoms[0].centroid
    box = (c.x - 0.02, c.y - 0.02, c.x + 0.02, c.y + 0.02)
    days = [t.strftime("%Y-%m-%d") for t in e.meta["datetime"]]
    want = {(str(e.ids[i]), str(e.sensors[i])): i for i in range(len(e))
            if shapely.intersects(geoms[i], shapely.box(*box)) and "2018-05-01" <= days[i] <= "2018-09-01"}
    assert 0 < len(want) < len(e)
    out = tmp_path / "roi.parquet"
    assert main(["export", str(index), "--bbox", *map(str, box), "--start", "2018-05-01",
                 "--end", "2018-09-01", "--out", str(out)]) == 0
    assert f"{len(want)} items" in capsys.readouterr().out
    gdf = gpd.read_parquet(out)
    assert gdf.crs.name == "WGS 84 (CRS84)" and gdf.geometry.name == "geometry"
    got = list(zip(gdf["id"], gdf["sensor"], strict=True))
    assert sorted(got) == sorted(want)
    names = list(e.label_names)
    for r, key in zip(gdf.itertuples(), got, strict=True):
        i = want[key]
        v = e.vectors[i] / np.linalg.norm(e.vectors[i])
        np.testing.assert_allclose(np.asarray(r.descriptor, np.float32), v, atol=1e-6)
        assert r.geometry.equals_exact(geoms[i], 1e-9) and r.place == e.meta["place"][i]
        assert list(r.labels) == [names[j] for j in np.flatnonzero(e.labels[i])]
        assert r.datetime.strftime("%Y-%m-%d") == days[i]
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(out).metadata[b"csmae"])
    assert meta["dim"] == e.dim and meta["where"]["bbox"] == list(box)


def test_export_bad_input(timeline_index, tmp_path, capsys):
    from csmae.cli import main

    index, _ = timeline_index
    assert main(["export", str(index), "--bbox", "-120", "10", "-119", "11", "--out",
                 str(tmp_path / "x.parquet")]) == 1
    assert "no item of the index passes" in capsys.readouterr().err and not (tmp_path / "x.parquet").exists()
    assert main(["export", str(index), "--bbox", "0", "0", "1", "1", "--out", str(tmp_path / "x.csv")]) == 1
    assert ".parquet" in capsys.readouterr().err
    bad_box = ["--bbox", "5", "0", "1", "1"]  # west of east
    assert main(["export", str(index), *bad_box, "--out", str(tmp_path / "y.parquet")]) == 1
    with pytest.raises(SystemExit):
        main(["export", str(index), "--out", str(tmp_path / "z.parquet")])
