"""``csmae changes`` on an index of a synthetic series archive (tiny random model, exact index).

Reference: per-place loops over the embeddings folder the index was built from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from csmae.data.synth_time import Series

BEFORE, AFTER = "2018-04-01/2018-06-01", "2018-07-26/2018-10-01"
SERIES = Series(dates=("2018-04-08", "2018-05-20", "2018-08-06", "2018-09-25"), change_fraction=0.5)


@pytest.fixture(scope="module")
def series_index(tmp_path_factory) -> tuple[Path, Path]:
    import torch

    import csmae
    from csmae.data.synth import write_synthetic
    from csmae.retrieval import build_index, embed_dataset

    tmp = tmp_path_factory.mktemp("changes")
    store = write_synthetic(tmp / "store", n=10, seed=2, format="store", layout="native", series=SERIES)[0]
    torch.manual_seed(0)
    csmae.create_model("csmae_sesd_tiny").save_pretrained(tmp / "model")
    embed_dataset(tmp / "model", [str(store)], tmp / "emb", precision="fp32", device="cpu", batch_size=16)
    build_index(tmp / "emb", kind="exact", out=tmp / "index")
    return tmp / "index", tmp / "emb"


def _brute(emb_dir: Path, a: str, b: str) -> dict[str, float]:
    from csmae.retrieval.embeddings import load_embeddings

    emb = load_embeddings(emb_dir)
    times = [t.strftime("%Y-%m-%d") for t in emb.meta["datetime"]]
    out = {}

    def mean(p: str, sensor: str, lo: str, hi: str) -> np.ndarray | None:
        vs = [emb.vectors[i].astype(np.float64) for i in range(len(emb)) if emb.meta["place"][i] == p
              and emb.sensors[i] == sensor and lo <= times[i] < hi]
        if not vs:
            return None
        m = sum(v / np.linalg.norm(v) for v in vs)
        return m / np.linalg.norm(m)

    for p in sorted(set(emb.meta["place"])):
        x, y = mean(p, a, "2018-04-01", "2018-06-01"), mean(p, b, "2018-07-26", "2018-10-01")
        if x is not None and y is not None:
            out[p] = 1 - float(x @ y)
    return out


@pytest.mark.parametrize("pairing", ["s2->s2", "s2->s1"])
def test_changes_cli_ranks_places_like_brute_force(series_index, tmp_path, capsys, pairing):
    import geopandas as gpd

    from csmae.cli import main

    index, emb = series_index
    out = tmp_path / "changes.parquet"
    rc = main(["changes", str(index), "--before", BEFORE, "--after", AFTER, "--pairing", pairing, "--k", "4",
               "--out", str(out), "--geojson", str(tmp_path / "changes.geojson"), "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    want = _brute(emb, *pairing.split("->"))
    assert printed["places"] == len(want) == 10
    ranked = sorted(want, key=lambda p: (-want[p], p))
    assert [r["place"] for r in printed["top"]] == ranked[:4]
    for r in printed["top"]:
        assert r["score"] == pytest.approx(want[r["place"]], abs=1e-5) and r["pairing"] == pairing
        assert r["n_before"] == r["n_after"] == 2
    gdf = gpd.read_parquet(out)
    assert list(gdf["place"]) == ranked and gdf.crs.name == "WGS 84 (CRS84)"
    feats = json.loads((tmp_path / "changes.geojson").read_text())["features"]
    assert [f["properties"]["place"] for f in feats] == ranked
    # every place's cell contains the footprints of its items
    import shapely

    from csmae.retrieval.embeddings import load_embeddings

    e = load_embeddings(emb)
    cells = dict(zip(gdf["place"], gdf.geometry, strict=True))
    for g, p in zip(e.meta["geometry"], e.meta["place"], strict=True):
        assert cells[p].contains(shapely.from_wkb(g).centroid)


def test_changes_cli_bbox_and_bad_input(series_index, tmp_path, capsys):
    import shapely

    from csmae.cli import main
    from csmae.retrieval.embeddings import load_embeddings

    index, emb = series_index
    e = load_embeddings(emb)
    c = shapely.from_wkb(e.meta["geometry"][0]).centroid
    box = [c.x - 0.001, c.y - 0.001, c.x + 0.001, c.y + 0.001]
    rc = main(["changes", str(index), "--before", BEFORE, "--after", AFTER, "--bbox", *map(str, box),
               "--json"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["place"] for r in got["top"]] == [e.meta["place"][0]]
    rc = main(["changes", str(index), "--before", "2016-01-01/2016-06-01", "--after", AFTER])
    assert rc == 1 and "the archive covers 2018-04" in capsys.readouterr().err
    rc = main(["changes", str(index), "--before", "2018-06-01/2018-04-01", "--after", AFTER])
    assert rc == 1 and "END must be after START" in capsys.readouterr().err
    rc = main(["changes", str(index), "--before", BEFORE, "--after", AFTER, "--out", str(tmp_path / "x.csv")])
    assert rc == 1 and ".parquet" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
    with pytest.raises(SystemExit):
        main(["changes", str(index), "--before", BEFORE, "--after", AFTER, "--pairing", "s3->s1"])


def test_changes_cli_like_ranks_places_by_change_vector(series_index, capsys):
    from csmae.cli import main
    from csmae.retrieval.embeddings import load_embeddings

    index, emb = series_index
    e = load_embeddings(emb)
    times = [t.strftime("%Y-%m-%d") for t in e.meta["datetime"]]

    def mean(p, s, lo, hi):
        vs = [e.vectors[i].astype(np.float64) for i in range(len(e))
              if e.meta["place"][i] == p and e.sensors[i] == s and lo <= times[i] < hi]
        m = sum(v / np.linalg.norm(v) for v in vs)
        return m / np.linalg.norm(m)

    places = sorted(set(e.meta["place"]))
    raw = {p: mean(p, "s2", "2018-07-26", "2018-10-01") - mean(p, "s2", "2018-04-01", "2018-06-01")
           for p in places}
    centre = sum(raw.values()) / len(raw)
    unit = {p: (v - centre) / np.linalg.norm(v - centre) for p, v in raw.items()}
    query = places[0]
    want = sorted((p for p in places if p != query), key=lambda p: (-float(unit[p] @ unit[query]), p))
    rc = main(["changes", str(index), "--before", BEFORE, "--after", AFTER, "--pairing", "s2:s2",
               "--like", query, "--k", "20", "--json"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["place"] for r in got["top"]] == want
    for r in got["top"]:
        assert r["similarity"] == pytest.approx(float(unit[r["place"]] @ unit[query]), abs=1e-5)
    rc = main(["changes", str(index), "--before", BEFORE, "--after", AFTER, "--like", query])
    assert rc == 1 and "one sensor pairing" in capsys.readouterr().err
    rc = main(["changes", str(index), "--before", BEFORE, "--after", AFTER, "--pairing", "s2:s2",
               "--like", "01N-1-1"])
    assert rc == 1 and "no acquisitions in both periods" in capsys.readouterr().err
