"""A synthetic archive for the scale benchmarks, written as a csmae embeddings folder.

**Synthetic, not real data.** ``items`` rows = P places x ``dates`` dates x 2 sensors (s1, s2):
places are the 1200 m cells of the place grid of UTM 33N (``csmae.geo.place_of``'s grid), a square
block of ``side x side`` cells from column 300, row 4400 (it covers the S2 tile T33UUP that
bench/bench_tile.py writes: columns 333-424, rows 4408-4499); each row's footprint is its place's
cell (lon/lat WKB), its ``place`` column the cell's key, its acquisition time date ``d`` x
``step_days`` after ``day0`` (S1 seven hours after S2), its descriptor a random unit vector
(float32, seeded per shard). Row ``r``: place ``r // (2 * dates)``, date ``(r // 2) % dates``,
sensor ``("s1", "s2")[r % 2]``; pair id ``P{place:07d}_D{date:03d}``.

The manifest names ``model_dir``'s model (sha256, sensors, D) when given, so ``csmae ingest`` and
``csmae search`` with that model accept an index built from the folder.

    from synth_archive import write_archive   # (bench/ on sys.path)
    write_archive(Path("/tmp/emb-1m"), items=1_000_000, dim=96, dates=20, model_dir=Path("model"))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COL0, ROW0, CELL = 300, 4400, 1200.0
DAY0 = np.datetime64("2018-01-05T10:00:00", "s")


@dataclass(frozen=True)
class Layout:
    """Where the synthetic rows are: places on a square block of the place grid, dates, sensors."""

    items: int
    dates: int = 20
    step_days: int = 6

    @property
    def places(self) -> int:
        return max(1, self.items // (2 * self.dates))

    @property
    def side(self) -> int:
        return int(np.ceil(np.sqrt(self.places)))

    @property
    def n(self) -> int:
        return self.places * self.dates * 2

    def col_row(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return COL0 + p % self.side, ROW0 + p // self.side

    def key(self, p: int) -> str:
        c, r = self.col_row(np.array([p]))
        return f"33N-{int(c[0])}-{int(r[0])}"

    def date(self, d: np.ndarray) -> np.ndarray:
        return DAY0 + (np.asarray(d) * self.step_days * 86400).astype("timedelta64[s]")

    def period(self, first: int, last: int) -> str:
        """``START/END`` (ISO dates, END exclusive) holding dates ``first..last`` of both sensors."""
        a = str(self.date(np.array([first]))[0])[:10]
        b = str(self.date(np.array([last + 1]))[0])[:10]
        return f"{a}/{b}"


def cells(layout: Layout, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(WKB per place, (P, 2) lon/lat centre) of the places ``p``: their 1200 m cells in EPSG:4326."""
    import shapely
    from pyproj import Transformer

    col, row = layout.col_row(p)
    x0, y0 = col * CELL, row * CELL
    xs = np.stack([x0, x0 + CELL, x0 + CELL, x0, x0], 1)
    ys = np.stack([y0, y0, y0 + CELL, y0 + CELL, y0], 1)
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(xs, ys)
    wkb = shapely.to_wkb(shapely.polygons(np.stack([lon, lat], axis=-1)))
    cx, cy = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(x0 + CELL / 2,
                                                                                       y0 + CELL / 2)
    return wkb, np.column_stack([cx, cy])


def tile_bbox() -> tuple[float, float, float, float]:
    """Lon/lat box (W, S, E, N) of the S2 tile T33UUP's 109.8 km square (bench_tile.py's origin)."""
    from pyproj import Transformer

    x0, y1 = 399960.0, 5400000.0
    xs, ys = [x0, x0 + 109800, x0, x0 + 109800], [y1, y1, y1 - 109800, y1 - 109800]
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(xs, ys)
    return float(min(lon)), float(min(lat)), float(max(lon)), float(max(lat))


def tile_places(layout: Layout) -> int:
    """How many places of the archive lie inside T33UUP (cells with their centre in the tile)."""
    p = np.arange(layout.places)
    col, row = layout.col_row(p)
    cx, cy = (col + 0.5) * CELL, (row + 0.5) * CELL
    return int(((cx > 399960) & (cx < 399960 + 109800) & (cy > 5400000 - 109800) & (cy < 5400000)).sum())


def _model_facts(model_dir: Path | None, dim: int) -> tuple[dict | None, dict]:
    if model_dir is None:
        return None, {"s1": {}, "s2": {}}
    from csmae.models import from_pretrained
    from csmae.retrieval.embed import model_info

    model = from_pretrained(model_dir)
    info = model_info(model_dir, model)
    if info["dim"] != dim:
        raise ValueError(f"{model_dir} makes D={info['dim']} descriptors, not {dim}")
    return info, {s: model.sensors[s].to_dict() for s in ("s1", "s2")}


def write_archive(folder: Path, *, items: int, dim: int, dates: int = 20, model_dir: Path | None = None,
                  shard_rows: int = 200_000, seed: int = 0, prefix: str = "P") -> Layout:
    """Write the synthetic archive (see the module docstring) as an embeddings folder (pair ids
    ``{prefix}{place:07d}_D{date:03d}``: another prefix gives items new to an index of this one)."""
    from csmae.integrity import checksum_files
    from csmae.retrieval.artifacts import base_manifest
    from csmae.retrieval.embeddings import write_shard

    layout = Layout(items=items, dates=dates)
    n = layout.n
    shard_rows -= shard_rows % (2 * dates)  # whole places per shard
    folder.mkdir(parents=True)
    model, sensors = _model_facts(model_dir, dim)
    shards = []
    for si, lo in enumerate(range(0, n, shard_rows)):
        hi = min(n, lo + shard_rows)
        r = np.arange(lo, hi)
        p, d = r // (2 * dates), (r // 2) % dates
        s2 = r % 2 == 1
        up = np.unique(p)
        wkb, _ = cells(layout, up)
        col, row = layout.col_row(up)
        keys = np.array([f"33N-{c}-{w}" for c, w in zip(col, row, strict=True)], dtype=object)
        at = p - up[0]
        when = layout.date(d) + np.where(s2, 0, 7 * 3600).astype("timedelta64[s]")
        iso = [f"{t}Z" for t in when.astype(str)]
        vec = _shard_vectors(si, hi - lo, dim, seed)
        name = f"part-{si:05d}.parquet"
        write_shard(folder / name, ids=[f"{prefix}{a:07d}_D{b:03d}" for a, b in zip(p, d, strict=True)],
                    sensors=np.where(s2, "s2", "s1").tolist(), splits=["test"] * (hi - lo),
                    labels=np.zeros((hi - lo, 19), bool), vectors=vec,
                    meta={"geometry": list(wkb[at]), "datetime": iso, "place": list(keys[at])})
        shards.append({"file": name, "rows": hi - lo, "pairs": (hi - lo) // 2})
    man = base_manifest("csmae-embeddings", model=model, dim=dim, sensors=sensors,
                        dataset={"sources": ["synthetic"], "kind": "synthetic scale archive "
                                 "(bench/synth_archive.py)", "pairs": n // 2, "geo": True},
                        precision="fp32", count=n, shards=shards,
                        checksums=checksum_files(folder, [s["file"] for s in shards]))
    (folder / "manifest.json").write_text(json.dumps(man))
    return layout


def _shard_vectors(si: int, n_rows: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, si])
    vec = rng.standard_normal((n_rows, dim), dtype=np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    return vec


def write_index(folder: Path, *, items: int, dim: int, dates: int = 20, shard_rows: int = 200_000,
                seed: int = 0) -> Layout:
    """The index ``csmae index`` builds from :func:`write_archive`'s folder (same rows in the same
    order, same vectors, items table and manifest fields), written a chunk at a time without the
    embeddings folder: for archives whose per-row columns ``csmae index`` cannot hold twice in this
    machine's memory (10M rows). The engine is csmae's own (``create_backend``, ``add``, ``save``);
    the items table is csmae's ``items_table`` per chunk, streamed to one Parquet file.
    bench/bench_timeline.py checks it against ``csmae index`` on a small archive (``--check-writer``)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    from csmae.integrity import checksum_files
    from csmae.labels import LABELS_19
    from csmae.retrieval.artifacts import AtomicFolder, write_json_atomic
    from csmae.retrieval.backends.registry import create_backend
    from csmae.retrieval.embeddings import Embeddings
    from csmae.retrieval.index import KIND, data_files, index_manifest, items_table
    from csmae.retrieval.topk import l2_normalize

    layout = Layout(items=items, dates=dates)
    n = layout.n
    shard_rows -= shard_rows % (2 * dates)
    be = create_backend(None, "exact", dim=dim, n_hint=n, label_names=list(LABELS_19))
    emb_manifest = {"model": None, "sensors": {"s1": {}, "s2": {}}, "precision": "fp32",
                    "dataset": {"sources": ["synthetic"], "kind": "synthetic scale archive "
                                "(bench/synth_archive.py)", "pairs": n // 2, "geo": True}}
    with AtomicFolder(folder, kind=KIND) as tmp:
        writer = None
        start = 0
        for s_index, sensor in enumerate(("s1", "s2")):  # rows grouped by sensor, as csmae index
            for si, lo in enumerate(range(0, n, shard_rows)):
                hi = min(n, lo + shard_rows)
                vec = _shard_vectors(si, hi - lo, dim, seed)
                r = np.arange(lo + s_index, hi, 2)
                p, d = r // (2 * dates), (r // 2) % dates
                up = np.unique(p)
                wkb, _ = cells(layout, up)
                bounds = shapely.bounds(shapely.from_wkb(wkb))
                col, row = layout.col_row(up)
                keys = np.array([f"33N-{c}-{w}" for c, w in zip(col, row, strict=True)], dtype=object)
                at = p - up[0]
                when = layout.date(d) + np.timedelta64(0 if sensor == "s2" else 7 * 3600, "s")
                meta = pd.DataFrame({
                    "geometry": list(wkb[at]), "bbox_xmin": bounds[at, 0], "bbox_ymin": bounds[at, 1],
                    "bbox_xmax": bounds[at, 2], "bbox_ymax": bounds[at, 3],
                    "datetime": pd.to_datetime(when.astype("datetime64[us]")).tz_localize("UTC"),
                    "country": [None] * len(r), "season": [None] * len(r), "scene": [None] * len(r),
                    "place": list(keys[at])})
                m = len(r)
                ids = np.array([f"P{a:07d}_D{b:03d}" for a, b in zip(p, d, strict=True)], dtype=object)
                emb = Embeddings(ids=ids, sensors=np.full(m, sensor, dtype=object),
                                 splits=np.full(m, "test", dtype=object), labels=np.zeros((m, 19), bool),
                                 vectors=vec[r - lo], meta=meta)
                chunk = items_table(emb, np.arange(m))
                be.add(np.arange(start, start + m, dtype=np.int64),
                       l2_normalize(np.ascontiguousarray(vec[r - lo], np.float32)), chunk)
                table = pa.Table.from_pandas(chunk, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp / "items.parquet", table.schema)
                writer.write_table(table.cast(writer.schema))
                start += m
        assert writer is not None
        writer.close()
        ranges = {"s1": [0, n // 2], "s2": [n // 2, n]}
        man = index_manifest(emb_manifest, be, kind="exact", dim=dim, ranges=ranges, recall=None,
                             recall_queries=500, build_s=0.0, source="bench/synth_archive.py write_index",
                             label_names=list(LABELS_19), nonfinite=None)
        entry = be.save(tmp, generation=0)
        man.update(backend=entry, files={"items": "items.parquet"}, generation=0)
        man["checksums"] = checksum_files(tmp, data_files(man))
        write_json_atomic(tmp / "manifest.json", man)
    return layout
