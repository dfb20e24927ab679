"""Embeddings shards are GeoParquet 1.1 (geopandas reads them as they are); index items and hits carry geo."""

from __future__ import annotations

import json

import numpy as np
import pytest

gpd = pytest.importorskip("geopandas")
shapely = pytest.importorskip("shapely")


def _boxes(n: int, seed: int = 0) -> list[bytes | None]:
    """n small squares over Europe (every 5th None: a source without georeferencing)."""
    rng = np.random.default_rng(seed)
    out: list[bytes | None] = []
    for i in range(n):
        if i % 5 == 4:
            out.append(None)
            continue
        x, y = rng.uniform(0, 20), rng.uniform(40, 60)
        out.append(shapely.to_wkb(shapely.box(x, y, x + 0.02, y + 0.01)))
    return out


def _shard(path, n=40, d=8):
    from csmae.retrieval.embeddings import write_shard

    rng = np.random.default_rng(1)
    geoms = _boxes(n)
    meta = {"geometry": geoms,
            "datetime": [None if i % 7 == 0 else f"2017-06-{1 + i % 28:02d}T10:10:31Z" for i in range(n)],
            "country": ["Austria" if i % 2 else None for i in range(n)],
            "season": ["Summer"] * n, "scene": [f"scene{i % 3}" for i in range(n)]}
    write_shard(path, ids=[f"p{i}" for i in range(n)], sensors=["s1", "s2"] * (n // 2),
                splits=["test"] * n, labels=rng.random((n, 19)) < 0.2,
                vectors=rng.normal(size=(n, d)).astype(np.float32), meta=meta)
    return meta


def test_geopandas_reads_shard_as_is(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "part-00000.parquet"
    meta = _shard(path)
    gdf = gpd.read_parquet(path)
    assert gdf.crs is not None and gdf.crs.equals("OGC:CRS84") or gdf.crs.to_epsg() == 4326
    assert gdf.geometry.name == "geometry"
    for g, w in zip(gdf.geometry, meta["geometry"], strict=True):
        assert (g is None and w is None) or g.equals(shapely.from_wkb(w))
    geo = json.loads(pq.read_schema(path).metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Polygon"]
    assert col["covering"] == {"bbox": {f: ["bbox", f] for f in ("xmin", "ymin", "xmax", "ymax")}}
    # the covering column drives bbox filters: same rows as a brute-force intersection test
    box = (5.0, 45.0, 15.0, 55.0)
    got = set(gpd.read_parquet(path, bbox=box)["id"])
    want = {f"p{i}" for i, w in enumerate(meta["geometry"])
            if w is not None and shapely.from_wkb(w).intersects(shapely.box(*box))}
    assert got == want and want
    types = {f.name: str(f.type) for f in pq.read_schema(path)}
    assert types["datetime"] == "timestamp[us, tz=UTC]"


def test_all_null_geometry_shard_is_valid(tmp_path):
    from csmae.retrieval.embeddings import write_shard

    path = tmp_path / "p.parquet"
    write_shard(path, ids=["a", "b"], sensors=["s1", "s2"], splits=[None, None],
                labels=np.zeros((2, 19), bool), vectors=np.ones((2, 4), np.float32))
    gdf = gpd.read_parquet(path)
    assert gdf.geometry.isna().all() and len(gdf) == 2


def _write_folder(folder, shards_meta, dim):
    """An embeddings folder whose shards are given as (write_shard kwargs)."""
    from csmae.atomic import write_json_atomic
    from csmae.retrieval.embeddings import KIND, write_shard

    shards = []
    for k, kw in enumerate(shards_meta):
        f = f"part-{k:05d}.parquet"
        write_shard(folder / f, **kw)
        shards.append({"file": f, "rows": len(kw["ids"])})
    write_json_atomic(folder / "manifest.json", {
        "kind": KIND, "dim": dim, "count": sum(s["rows"] for s in shards), "shards": shards,
        "sensors": {"s1": {}, "s2": {}}})


def test_old_shards_without_geo_columns_still_load(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from csmae.retrieval.embeddings import load_embeddings

    folder = tmp_path / "emb"
    folder.mkdir()
    labels = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(2 * 19, bool)), 19)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(8, np.float32)), 4)
    pq.write_table(pa.table({"id": ["a", "a"], "sensor": ["s1", "s2"], "split": ["test", "test"],
                             "labels": labels, "vector": vec}), folder / "part-00000.parquet")
    (folder / "manifest.json").write_text(json.dumps({"kind": "csmae-embeddings", "dim": 4, "count": 2,
                                                      "shards": [{"file": "part-00000.parquet", "rows": 2}]}))
    emb = load_embeddings(folder)
    assert emb.meta is None and len(emb) == 2
    from csmae.retrieval.index import build_index
    from csmae.retrieval.retriever import Retriever

    r = Retriever(build_index(emb, "exact"))
    hit = r.search_by_id("a", sensor="s1", k=1)[0]
    assert hit.geometry is None and hit.datetime is None


def _geo_embeddings(n_pairs=30, d=8, seed=0):
    """Both sensors per pair, each pair a 0.01 x 0.01 degree square on a grid (row order interleaved)."""
    from csmae.retrieval.embeddings import embeddings_from_arrays

    rng = np.random.default_rng(seed)
    geoms, times = [], []
    for i in range(n_pairs):
        x, y = 10 + 0.01 * (i % 6), 50 + 0.01 * (i // 6)
        w = shapely.to_wkb(shapely.box(x, y, x + 0.01, y + 0.01))
        geoms += [w, w]
        times += [f"2017-07-{1 + i % 28:02d}T05:00:00Z", f"2017-07-{1 + i % 28:02d}T10:00:00Z"]
    return embeddings_from_arrays(
        ids=[f"p{i:03d}" for i in range(n_pairs) for _ in range(2)], sensors=["s1", "s2"] * n_pairs,
        splits=["test"] * 2 * n_pairs, labels=np.repeat(rng.random((n_pairs, 19)) < 0.3, 2, axis=0),
        vectors=rng.normal(size=(2 * n_pairs, d)).astype(np.float32),
        manifest={"sensors": {"s1": {}, "s2": {}}}, meta={"geometry": geoms, "datetime": times})


def test_items_hits_and_search_by_point(tmp_path):
    from csmae.retrieval.embeddings import load_embeddings
    from csmae.retrieval.index import SearchIndex, build_index
    from csmae.retrieval.retriever import Retriever

    emb = _geo_embeddings()
    # through disk: shard -> load -> index folder -> load
    folder = tmp_path / "emb"
    folder.mkdir()
    _write_folder(folder, [dict(ids=list(emb.ids), sensors=list(emb.sensors), splits=list(emb.splits),
                                labels=emb.labels, vectors=emb.vectors,
                                meta={"geometry": list(emb.meta["geometry"]),
                                      "datetime": [t.isoformat() for t in emb.meta["datetime"]]})], emb.dim)
    loaded = load_embeddings(folder)
    assert list(loaded.meta["geometry"]) == list(emb.meta["geometry"])
    build_index(loaded, "exact", tmp_path / "idx")
    items = SearchIndex.load(tmp_path / "idx").items
    assert {"geometry", "bbox_xmin", "bbox_ymax", "datetime"} <= set(items.columns)
    r = Retriever.load(tmp_path / "idx")
    hits = r.search_by_id("p007", sensor="s1", target="s2", k=5)
    for h in hits:
        row = int(np.flatnonzero((emb.ids == h.id) & (emb.sensors == h.sensor))[0])
        want = shapely.from_wkb(emb.meta["geometry"][row])
        assert shapely.geometry.shape(h.geometry).equals_exact(want, 1e-7)
        assert h.datetime == emb.meta["datetime"][row].strftime("%Y-%m-%dT%H:%M:%SZ")
        assert h.datetime.endswith("T10:00:00Z")  # the s2 row's own time
    # a point inside pair 13's square (away from edges) finds pair 13, brute force over the footprints
    lon, lat = 10 + 0.01 * (13 % 6) + 0.004, 50 + 0.01 * (13 // 6) + 0.006
    brute = {i for i, w in zip(emb.ids, emb.meta["geometry"], strict=True)
             if shapely.from_wkb(w).covers(shapely.Point(lon, lat))}
    assert brute == {"p013"}
    assert r.locate(lon, lat, sensor="s2") == "p013"
    assert r.search_by_point(lon, lat, sensor="s2", target="s1", k=3) == \
        r.search_by_id("p013", sensor="s2", target="s1", k=3)
    outside = r"no s2 patch .* contains lon 1\.000000.*span lon 10\.0000 to 10\.0600"
    with pytest.raises(ValueError, match=outside):
        r.locate(1.0, 1.0, sensor="s2")
    with pytest.raises(ValueError, match="lon, lat must be degrees"):
        r.locate(200.0, 1.0, sensor="s2")
