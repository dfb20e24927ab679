"""A FAISS index over both sensors' descriptors, with item metadata and a sensor filter.

Index folder::

    INDEX_DIR/
      manifest.json    kind "csmae-index": model (sha256, name, variant, pooling, dim), sensors, kind,
                       factory, count, sensor row ranges, search params, recall@10 vs exact (approximate),
                       skipped_nonfinite (NaN/inf vectors left out), checksums (size + sha256 per
                       file, verified by SearchIndex.load before FAISS reads a byte)
      index.faiss      inner product on L2-normalised float32 vectors (= cosine)
      items.parquet    row i = faiss id i: id, sensor, split, labels (bool multi-hot), and when the
                       embeddings have them the geo columns (embeddings.META_COLUMNS: geometry WKB
                       EPSG:4326, bbox_xmin..bbox_ymax, datetime UTC, country, season, scene)

Rows are grouped by sensor (all S1, then all S2, each in embeddings order), so a sensor filter is a
contiguous id range (``faiss.IDSelectorRange``), which every FAISS index type honours.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csmae.integrity import checksum_files, verify_manifest_files
from csmae.retrieval.artifacts import AtomicFolder, base_manifest, read_manifest, write_json_atomic
from csmae.retrieval.embeddings import Embeddings, drop_nonfinite, load_embeddings
from csmae.retrieval.topk import l2_normalize

log = logging.getLogger(__name__)

KIND = "csmae-index"
DATA_FILES = ("index.faiss", "items.parquet")
TARGET_RECALL = 0.95


def factory_string(kind: str, n: int) -> str:
    """FAISS factory string for a kind name (anything else is passed through as a factory string)."""
    if kind == "exact":
        return "Flat"
    if kind == "hnsw":
        return "HNSW32,Flat"
    if kind == "hnsw-sq8":  # 8-bit scalar-quantised vectors: ~1/3 of the memory, scores approximate
        return "HNSW32,SQ8"
    if kind == "ivf":
        nlist = int(max(1, min(65536, 4 * np.sqrt(max(n, 1)))))
        return f"IVF{nlist}_HNSW32,Flat" if n >= 200_000 else f"IVF{nlist},Flat"
    return kind


#: FAISS's flat (exact) search scans query by query until n_queries * D reaches
#: ``distance_compute_blas_threshold`` (128,000 in faiss 1.15: 167 queries at D=768), then uses BLAS.
#: Measured on the dev CPU, one thread, 100k x 768 (bench/bench_flat_batch.py): BLAS is 1.6x faster
#: from 4 queries per call and 6x from 50; one query stays on the scan. csmae sets 4 * 768 once.
BLAS_THRESHOLD = 4 * 768
_configured = False


def _faiss() -> Any:
    global _configured
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("csmae index needs FAISS: pip install faiss-cpu (or faiss-gpu)") from e
    if not _configured:  # once, so that a user's own later setting stands
        faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
        _configured = True
    return faiss


def set_search_param(index: Any, name: str, value: int) -> None:
    faiss = _faiss()
    faiss.ParameterSpace().set_index_parameter(index, name, value)


def _search_params(index: Any, sel: Any, params: dict[str, int]) -> Any:
    faiss = _faiss()
    base = faiss.downcast_index(index)
    if isinstance(base, faiss.IndexHNSW):
        p = faiss.SearchParametersHNSW(sel=sel)
        if "efSearch" in params:
            p.efSearch = int(params["efSearch"])
        return p
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        p = faiss.SearchParametersIVF(sel=sel)
        if "nprobe" in params:
            p.nprobe = int(params["nprobe"])
        return p
    return faiss.SearchParameters(sel=sel)


def _tunable(index: Any) -> tuple[str, list[int]] | None:
    faiss = _faiss()
    if isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        return "efSearch", [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return "nprobe", [
            p for p in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256) if p <= ivf.nlist
        ]
    return None


def recall_at_k(
    index: Any,
    vectors: np.ndarray,
    *,
    k: int = 10,
    n_queries: int = 500,
    seed: int = 0,
    params: dict[str, int] | None = None,
) -> float:
    """Mean recall@k of ``index`` against exact inner-product search, on sampled archive items as
    queries (each query's own row excluded from both result lists)."""
    faiss = _faiss()
    n = len(vectors)
    if n < 2:
        return 1.0
    k = min(k, n - 1)
    rng = np.random.default_rng(seed)
    qi = np.sort(rng.choice(n, size=min(n_queries, n), replace=False))
    q = vectors[qi]
    _, exact = faiss.knn(q, vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    p = _search_params(index, None, params or {})
    _, approx = index.search(q, k + 1, params=p)
    hits = 0
    for row, own in enumerate(qi):
        e = [j for j in exact[row] if j != own][:k]
        a = {j for j in approx[row] if j != own and j >= 0}
        hits += len(set(e) & a)
    return hits / (k * len(qi))


@dataclass
class SearchIndex:
    """A loaded index folder: FAISS index + items table + manifest."""

    index: Any
    items: Any  # pandas.DataFrame: id, sensor, split, labels
    manifest: dict[str, Any]
    path: Path | None = None

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def sensors(self) -> list[str]:
        return list(self.manifest["sensor_ranges"])

    @property
    def params(self) -> dict[str, int]:
        return dict(self.manifest.get("search_params") or {})

    def sensor_range(self, sensor: str) -> tuple[int, int]:
        ranges = self.manifest["sensor_ranges"]
        if sensor not in ranges:
            raise ValueError(f"the index has no {sensor!r} items; it holds {list(ranges)}")
        lo, hi = ranges[sensor]
        return int(lo), int(hi)

    def search(self, queries: np.ndarray, k: int, *, target: str = "any") -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows for (Q, D) query vectors (L2-normalised here) among ``target`` items.

        Returns scores (Q, k') float32 and row ids (Q, k') int64 with k' = min(k, items searched);
        approximate indexes may return -1 for missing results (dropped by callers).
        """
        faiss = _faiss()
        q = l2_normalize(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if q.shape[1] != self.dim:
            raise ValueError(f"query vectors have D={q.shape[1]}, the index holds D={self.dim}")
        if target == "any":
            lo, hi = 0, self.index.ntotal
        else:
            lo, hi = self.sensor_range(target)
        if hi <= lo:
            raise ValueError("the archive is empty: nothing to search")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(k, hi - lo)
        sel = None if (lo, hi) == (0, self.index.ntotal) else faiss.IDSelectorRange(lo, hi)
        params = _search_params(self.index, sel, self.params)
        scores, rows = self.index.search(q, k, params=params)
        return scores, rows

    def save(self, out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        faiss = _faiss()
        with AtomicFolder(out, overwrite=overwrite) as tmp:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            self.items.to_parquet(tmp / "items.parquet", index=False)
            # integrity: per-file sizes + sha256, verified by load() before FAISS parses the bytes
            self.manifest = {**self.manifest, "checksums": checksum_files(tmp, DATA_FILES)}
            write_json_atomic(tmp / "manifest.json", self.manifest)
        self.path = Path(out)
        return self.path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SearchIndex:
        import pandas as pd

        faiss = _faiss()
        path = Path(path)
        manifest = read_manifest(path, kind=KIND)
        for f in DATA_FILES:
            if not (path / f).exists():
                raise ValueError(f"{path}: {f} is missing (half-written or damaged index folder)")
        # integrity: damaged bytes must never reach faiss.read_index (a flipped HNSW header can make
        # it allocate many GiB; a flipped vector would rank first for every query)
        verify_manifest_files(path, manifest, what="index")
        try:
            index = faiss.read_index(str(path / "index.faiss"))
        except RuntimeError as e:
            raise ValueError(f"{path}/index.faiss is corrupted: {str(e).splitlines()[0]}") from None
        try:
            items = pd.read_parquet(path / "items.parquet")
        except Exception as e:
            raise ValueError(f"{path}/items.parquet is corrupted: {e}") from None
        n = int(manifest.get("count", -1))
        if index.ntotal != n or len(items) != n:
            raise ValueError(
                f"{path}: inconsistent index folder (manifest count {n}, index.faiss {index.ntotal} "
                f"vectors, items.parquet {len(items)} rows)"
            )
        if index.d != int(manifest["dim"]):
            raise ValueError(f"{path}: index.faiss has D={index.d}, manifest says {manifest['dim']}")
        return cls(index=index, items=items, manifest=manifest, path=path)


def build_index(
    emb: Embeddings | str | os.PathLike[str],
    kind: str = "exact",
    out: str | os.PathLike[str] | None = None,
    *,
    target_recall: float = TARGET_RECALL,
    recall_queries: int = 500,
    train_size: int = 100_000,
    overwrite: bool = False,
    seed: int = 0,
) -> SearchIndex:
    """Build one index over every sensor's vectors of an embeddings folder (or object).

    Args:
        emb: :class:`Embeddings` or an embeddings folder.
        kind: ``"exact"`` (IndexFlatIP), ``"hnsw"`` (HNSW32), ``"hnsw-sq8"`` (HNSW32 over 8-bit
            scalar-quantised vectors: about a third of the memory, approximate scores), ``"ivf"``
            (IVF, sqrt-sized lists) or any FAISS factory string (built with METRIC_INNER_PRODUCT).
        out: folder to save to (atomically); None = keep in memory.
        target_recall: approximate kinds get the smallest efSearch/nprobe that reaches this
            recall@10 against exact search on a sample; the measured recall is stored.
        recall_queries: sampled queries for that measurement.
        train_size: vectors used to train IVF/PQ indexes.
    """
    import pandas as pd

    faiss = _faiss()
    source = None
    if not isinstance(emb, Embeddings):
        source = str(Path(emb).resolve())
        emb = load_embeddings(emb)
    if len(emb) == 0:
        raise ValueError("the embeddings are empty: nothing to index")
    emb, nonfinite = drop_nonfinite(emb, source=source or "the embeddings")  # never index NaN/inf
    order_sensors = emb.sensor_names
    order = np.concatenate([np.flatnonzero(emb.sensors == s) for s in order_sensors])
    vectors = l2_normalize(emb.vectors[order])
    ranges, start = {}, 0
    for s in order_sensors:
        c = int((emb.sensors == s).sum())
        ranges[s] = [start, start + c]
        start += c
    n, d = vectors.shape
    factory = factory_string(kind, n)
    t0 = time.perf_counter()
    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(f"FAISS cannot build {factory!r}: {str(e).splitlines()[0]}") from None
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        tr = vectors[rng.choice(n, size=min(n, train_size), replace=False)]
        index.train(tr)
    index.add(vectors)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()  # search by id reconstructs stored vectors
    build_s = time.perf_counter() - t0
    params: dict[str, int] = {}
    recall = None
    tun = _tunable(index)
    if tun is not None:
        name, values = tun
        tried: list[tuple[int, float]] = []
        for v in values:
            r = recall_at_k(index, vectors, n_queries=recall_queries, seed=seed, params={name: v})
            tried.append((v, r))
            if r >= target_recall:
                break
        v, recall = tried[-1]
        if recall < target_recall:  # quantised vectors cap recall: take the cheapest setting at the cap
            best = max(r for _, r in tried)
            v, recall = next((v, r) for v, r in tried if r == best)
            log.warning(
                "%s cannot reach recall@10 %.3f on this archive (best %.3f, from %s=%d on); "
                "a kind with exact vectors (hnsw, exact) can",
                factory,
                target_recall,
                recall,
                name,
                v,
            )
        params = {name: v}
        log.info("%s: %s=%d gives recall@10 %.3f", factory, name, v, recall)
    elif factory != "Flat":
        recall = recall_at_k(index, vectors, n_queries=recall_queries, seed=seed)
    items = pd.DataFrame(
        {
            "id": emb.ids[order].astype(str),
            "sensor": emb.sensors[order].astype(str),
            "split": emb.splits[order],
            "labels": list(emb.labels[order]),
        }
    )
    if emb.meta is not None:  # geo columns (META_COLUMNS): geometry WKB, bbox_*, datetime, country, ...
        for c in emb.meta.columns:
            items[c] = emb.meta[c].iloc[order].reset_index(drop=True)
    man = emb.manifest
    manifest = base_manifest(
        KIND,
        model=man.get("model"),
        dim=d,
        sensors=man.get("sensors", {s: {} for s in order_sensors}),
        index_kind=kind,
        factory=factory,
        metric="inner_product (cosine on L2-normalised vectors)",
        count=n,
        sensor_ranges=ranges,
        search_params=params,
        recall_at_10=recall,
        recall_queries=recall_queries if recall is not None else 0,
        build_seconds=round(build_s, 3),
        embeddings=source,
        dataset=man.get("dataset"),
        label_names=emb.label_names,
        embed_precision=man.get("precision", "fp32"),
        skipped_nonfinite=nonfinite,
    )
    si = SearchIndex(index=index, items=items, manifest=manifest)
    if out is not None:
        si.save(out, overwrite=overwrite)
    return si
