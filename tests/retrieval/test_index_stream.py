"""``csmae index EMB_DIR`` shard by shard (#20 item 3): the same index as a build from loaded
embeddings, and a peak RSS well under what loading the folder costs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from csmae.retrieval.artifacts import base_manifest, write_json_atomic
from csmae.retrieval.embeddings import load_embeddings, write_shard
from csmae.retrieval.index import build_index

ROOT = Path(__file__).resolve().parents[2]


def write_folder(out: Path, *, shards: int, per: int, d: int, nan_row: int | None = None) -> Path:
    """A folder of ``shards`` shards of ``per`` rows (sensors interleaved, geo columns on some)."""
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    entries = []
    for j in range(shards):
        ids = [f"p{(j * per + i) // 2:07d}" for i in range(per)]
        v = rng.normal(size=(per, d)).astype(np.float32)
        if nan_row is not None and j == 1:
            v[nan_row] = np.nan
        write_shard(out / f"part-{j:05d}.parquet", ids=ids, sensors=["s1", "s2"] * (per // 2),
                    splits=["train", "val"] * (per // 2), labels=rng.random((per, 19)) < 0.2, vectors=v,
                    meta={"country": ["Austria" if i % 3 else None for i in range(per)],
                          "datetime": [f"2018-0{1 + i % 9}-0{1 + i % 7}T10:00:00Z"
                                       for i in range(per)]})  # fmt: skip
        entries.append({"file": f"part-{j:05d}.parquet", "rows": per})
    man = base_manifest("csmae-embeddings", model={"name": "t", "sha256": "c" * 64},
                        sensors={"s1": {"bands": ["VV"]}, "s2": {"bands": ["B02"]}}, dim=d,
                        count=shards * per, shards=entries)  # fmt: skip
    write_json_atomic(out / "manifest.json", man)
    return out


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf", "ivfpq"])
def test_a_streamed_build_equals_a_loaded_build(tmp_path, kind):
    folder = write_folder(tmp_path / "emb", shards=5, per=400, d=32, nan_row=7)
    streamed = build_index(folder, kind, tmp_path / "s")
    loaded = build_index(load_embeddings(folder), kind, tmp_path / "l")
    for key in ("count", "rows", "sensor_counts", "sensor_ranges", "label_names", "model", "sensors", "dim",
                "factory", "skipped_nonfinite"):  # fmt: skip
        assert streamed.manifest[key] == loaded.manifest[key], key
    assert streamed.items.drop(columns="labels").equals(loaded.items.drop(columns="labels"))
    assert (np.stack(streamed.items["labels"]) == np.stack(loaded.items["labels"])).all()
    rows = np.arange(len(loaded.items))
    np.testing.assert_array_equal(streamed.backend.reconstruct(rows), loaded.backend.reconstruct(rows))
    q = np.random.default_rng(1).normal(size=(8, 32)).astype(np.float32)
    if kind == "exact":
        for where in (None, {"split": ["val"], "country": ["Austria"]}):
            assert np.array_equal(
                streamed.search(q, 10, where=where)[1], loaded.search(q, 10, where=where)[1]
            )
    else:  # tuned on the same sampled queries, against an exact top-10 computed shard by shard
        assert streamed.manifest["recall_at_10"] >= 0.95
        assert set(streamed.manifest["search_params"]) == set(loaded.manifest["search_params"])


def test_gather_into_a_permutation_and_an_all_null_geo_folder(tmp_path):
    """``gather(rows, dest=perm)`` puts row ``rows[i]`` at ``perm[i]`` (brute force: the loaded
    vectors); a folder whose geo columns are all null reads as one without geo columns (no per-row
    frame of nulls), and its index has the core columns only, streamed and loaded alike."""
    from csmae.retrieval.emb_stream import scan

    folder = write_folder(tmp_path / "emb", shards=3, per=60, d=8)
    se, emb = scan(folder), load_embeddings(folder)
    rows = np.array([0, 5, 59, 60, 61, 119, 179])
    perm = np.random.default_rng(0).permutation(len(rows))
    out = se.gather(rows, dest=perm)
    np.testing.assert_array_equal(out[perm], emb.vectors[rows])
    bare = tmp_path / "bare"
    bare.mkdir()
    write_shard(bare / "part-00000.parquet", ids=["a", "a", "b", "b"], sensors=["s1", "s2"] * 2,
                splits=["train"] * 4, labels=np.eye(4, 19, dtype=bool),
                vectors=np.eye(4, 8, dtype=np.float32))  # fmt: skip
    man = json.loads((folder / "manifest.json").read_text())
    man.update(count=4, shards=[{"file": "part-00000.parquet", "rows": 4}])
    man.pop("checksums", None)
    write_json_atomic(bare / "manifest.json", man)
    assert scan(bare).rows.meta is None and load_embeddings(bare).meta is None
    for si in (build_index(bare, "exact"), build_index(load_embeddings(bare), "exact")):
        assert list(si.items.columns) == ["id", "sensor", "split", "labels", "live"]
        assert si.items["id"].tolist() == ["a", "b", "a", "b"]  # rows grouped by sensor


PEAK = """
import resource, sys
from csmae.retrieval.index import build_index
from csmae.retrieval.embeddings import load_embeddings
if sys.argv[1] == "build":
    build_index(sys.argv[2], "exact", sys.argv[3])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak_rss(*argv: str) -> int:
    r = subprocess.run([sys.executable, "-c", PEAK, *argv], capture_output=True, text=True, timeout=600,
                       cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.split()[-1])


def test_csmae_index_peak_rss_stays_near_the_index_size(tmp_path):
    """16 shards, 128k x 384 float32 = 197 MB of vectors. A Flat index holds every vector (1x);
    loading the folder first cost 1x more for the loaded vectors and 1x for their normalised copy
    (measured: +858 MB over the imports, 4.4x); shard by shard the build stays under 1.5x + 256 MB."""
    folder = write_folder(tmp_path / "emb", shards=16, per=8000, d=384)
    size = 16 * 8000 * 384 * 4
    base = peak_rss("imports")
    peak = peak_rss("build", str(folder), str(tmp_path / "idx"))
    assert peak - base < 1.5 * size + (256 << 20), (peak - base) / size
    man = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert man["count"] == 128000


def test_index_add_from_a_folder_equals_add_from_loaded_embeddings(tmp_path):
    """``csmae index add IDX EMB_DIR`` reads the folder shard by shard: the same rows, items and
    vectors as adding the loaded embeddings (re-added ids replaced, a NaN vector skipped)."""
    import shutil

    from csmae.retrieval.index import SearchIndex
    from csmae.retrieval.index_grow import add_embeddings

    base = write_folder(tmp_path / "a", shards=2, per=200, d=16)
    more = write_folder(tmp_path / "b", shards=3, per=100, d=16, nan_row=5)  # ids overlap a's
    build_index(base, "exact", tmp_path / "x")
    shutil.copytree(tmp_path / "x", tmp_path / "y")
    rx = add_embeddings(tmp_path / "x", more)
    ry = add_embeddings(tmp_path / "y", load_embeddings(more))
    assert (rx.added, rx.replaced, rx.skipped_nonfinite) == (ry.added, ry.replaced, ry.skipped_nonfinite)
    assert rx.replaced > 0 and rx.skipped_nonfinite == 1
    x, y = SearchIndex.load(tmp_path / "x"), SearchIndex.load(tmp_path / "y")
    assert x.items.drop(columns="labels").equals(y.items.drop(columns="labels"))
    live = np.flatnonzero(x.items["live"].to_numpy())
    np.testing.assert_array_equal(x.backend.reconstruct(live), y.backend.reconstruct(live))
    q = np.random.default_rng(3).normal(size=(5, 16)).astype(np.float32)
    assert np.array_equal(x.search(q, 8)[1], y.search(q, 8)[1])


def test_label_rows_share_one_read_only_array_per_label_set():
    """The items table's labels: row i equals labels[i] (brute force), equal label sets are the same
    read-only array (8 bytes a row), and an empty archive gives an empty column."""
    from csmae.retrieval.index import label_rows

    rng = np.random.default_rng(0)
    lab = rng.random((500, 19)) < 0.1
    lab[::7] = lab[1]
    out = label_rows(lab)
    assert out.dtype == object and len(out) == 500
    for i in range(500):
        np.testing.assert_array_equal(out[i], lab[i])
    assert out[0] is out[1] is out[7]
    assert len({id(x) for x in out}) == len(np.unique(lab, axis=0))
    with pytest.raises(ValueError):
        out[0][0] = True
    assert label_rows(np.zeros((0, 19), bool)).shape == (0,)


def test_duplicate_keys_equal_a_set_scan():
    """The (id, sensor) keys seen again, in row order, as a scan with a Python set finds them."""
    from csmae.retrieval.index import _duplicates

    rng = np.random.default_rng(1)
    ids = np.array([f"p{i}" for i in rng.integers(0, 300, 1000)], dtype=object)
    sensors = np.array(rng.choice(["s1", "s2", "s3"], 1000), dtype=object)
    seen: set[tuple[str, str]] = set()
    want = []
    for key in zip(ids.tolist(), sensors.tolist(), strict=True):
        if key in seen:
            want.append(key)
        seen.add(key)
    assert want and _duplicates(ids, sensors) == want
    assert _duplicates(ids[:1], sensors[:1]) == []


@pytest.mark.parametrize("block", [3, 64])
def test_exact_top_over_shards_equals_brute_force(tmp_path, monkeypatch, block):
    """The tuning's exact top-k, shard by shard and a block of queries at a time: the positions (in
    ``order``) of the k best normalised inner products among ``order``'s rows (float64 brute force)."""
    import csmae.retrieval.emb_stream as es
    from csmae.retrieval.normalize import l2_normalize

    monkeypatch.setattr(es, "QUERY_BLOCK", block)
    folder = write_folder(tmp_path / "emb", shards=4, per=50, d=16)
    se, emb = es.scan(folder), load_embeddings(folder)
    order = np.random.default_rng(2).permutation(200)[:150]  # some rows left out, any order
    q = l2_normalize(np.random.default_rng(3).normal(size=(10, 16)).astype(np.float32))
    got = es.exact_top(q, se, order, 7)
    scores = q.astype(np.float64) @ l2_normalize(emb.vectors[order]).astype(np.float64).T
    want = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", [0, 1, 7, 23])
def test_items_written_by_slices_equal_one_to_parquet(tmp_path, monkeypatch, n):
    """write_items (a slice of rows at a time) against pandas' own to_parquet of the whole table:
    the same schema with its pandas metadata, and the same values read back, for a column whose
    first slice is all null (its type from every row, not the first slice's) and list labels."""
    import pandas as pd
    import pyarrow.parquet as pq

    import csmae.retrieval.index as index_mod
    from csmae.retrieval.index import label_rows, write_items

    monkeypatch.setattr(index_mod, "ITEMS_SLICE", 5)
    rng = np.random.default_rng(n)
    items = pd.DataFrame({
        "id": [f"p{i:03d}" for i in range(n)],
        "sensor": ["s1", "s2"] * (n // 2) + ["s1"] * (n % 2),
        "split": [None if i % 4 == 0 else "test" for i in range(n)],
        "labels": label_rows(rng.random((n, 19)) < 0.3),
        "live": np.arange(n) % 3 != 0,
        "country": [None if i < 6 else "Austria" for i in range(n)],  # null through the first slice
        "geometry": [None if i < 5 else bytes([1, 2, i % 256]) for i in range(n)],
        "bbox_xmin": np.where(np.arange(n) % 2, np.nan, np.arange(n, dtype=float)),
        "datetime": pd.to_datetime([f"2018-01-{1 + i % 28:02d}T10:00:00Z" for i in range(n)]),
    })  # fmt: skip
    write_items(items, tmp_path / "slices.parquet")
    items.to_parquet(tmp_path / "whole.parquet", index=False)
    a, b = pq.read_table(tmp_path / "slices.parquet"), pq.read_table(tmp_path / "whole.parquet")
    assert a.schema.equals(b.schema, check_metadata=True)
    assert a.equals(b)
    assert pq.ParquetFile(tmp_path / "slices.parquet").metadata.num_row_groups == max(1, -(-n // 5))
    back = pd.read_parquet(tmp_path / "slices.parquet")
    whole = pd.read_parquet(tmp_path / "whole.parquet")
    assert back.drop(columns="labels").equals(whole.drop(columns="labels"))
    assert [list(x) for x in back["labels"]] == [list(x) for x in items["labels"]]


def test_a_streamed_index_written_by_slices_loads_as_built(tmp_path, monkeypatch):
    """The items file of a streamed build (written a few rows at a time, its per-row columns
    dropped after the table was made) loads back equal to the table the build held."""
    import csmae.retrieval.index as index_mod
    from csmae.retrieval.index import SearchIndex

    monkeypatch.setattr(index_mod, "ITEMS_SLICE", 37)
    folder = write_folder(tmp_path / "emb", shards=3, per=100, d=16, nan_row=3)
    built = build_index(folder, "exact", tmp_path / "idx")
    back = SearchIndex.load(tmp_path / "idx")
    assert back.items.drop(columns="labels").equals(built.items.drop(columns="labels"))
    assert (np.stack(back.items["labels"]) == np.stack(built.items["labels"])).all()
    assert len(back.items) == 299  # one NaN row left out
    q = np.random.default_rng(2).normal(size=(4, 16)).astype(np.float32)
    assert np.array_equal(back.search(q, 10)[1], built.search(q, 10)[1])


def test_scan_with_arrow_ids_gives_the_ids_as_pandas_would_hold_them(tmp_path):
    """scan(arrow_ids=True): the same ids as the object-array scan, in the dtype pandas gives a column
    of str (Arrow-backed under pandas 3: no Python str per row), shards of string and large_string."""
    import pandas as pd
    import pyarrow as pa

    from csmae.retrieval.emb_stream import _arrow_strings, scan, str_column_dtype

    folder = write_folder(tmp_path / "emb", shards=3, per=10, d=4)
    plain, arrow = scan(folder), scan(folder, arrow_ids=True)
    assert arrow.rows.ids.dtype == str_column_dtype()
    assert list(arrow.rows.ids) == plain.rows.ids.tolist() and len(arrow.rows.ids) == 30
    items = pd.DataFrame({"id": plain.rows.ids})
    assert pd.DataFrame({"id": arrow.rows.ids}).equals(items)  # the items table's column, same dtype
    chunks = [pa.array(["a", "b"]), pa.array(["c"], pa.large_string()), pa.array([], pa.string())]
    mixed = _arrow_strings(chunks)
    assert list(mixed) == ["a", "b", "c"] and mixed.dtype == str_column_dtype()
    assert list(_arrow_strings([])) == []
