"""The evaluation protocol: every direction (S1->S1, S2->S2, S1->S2, S2->S1, S1->mixed, S2->mixed).

Reference protocol (method.md section 7): queries = val split, archive = test split, exact search on
L2-normalised descriptors (cosine), ties broken by archive order. The mixed archive of a split is
all its S1 items followed by all its S2 items (each in embeddings order); its top-k lists are
merged from the per-sensor top-k lists (identical to searching the concatenation).

When queries and archive overlap (e.g. ``query_split="all", archive_split="all"``), each query's own
item (same id, same sensor) is always left out of the archive; ``exclude_own_pair`` also leaves out
its co-registered partner (same id, other sensor) in cross-sensor and mixed archives.
A k larger than an archive (after exclusions) is skipped for that direction, with a note.
With ``resume_dir``, each finished search is kept there and a rerun on the same inputs resumes.

Cross-model pairs (the paper's uni-modal baseline: S1 items described by the S1-only MAE, S2 items by
the S2-only MAE): :func:`cross_model_embeddings` takes each sensor's rows from its own embeddings,
after checking that both describe the same pairs (ids, splits, labels); the protocol then runs on
the combination as on one model's embeddings and records both models.

Memory: the vectors are searched block by block (:mod:`csmae.retrieval.eval_stream`): an
embeddings folder (:func:`evaluation_source`, what ``csmae evaluate`` uses) is read shard by shard,
a chunk of queries at a time against one archive block at a time, and the per-block top-k lists are
merged; the results are identical to one search over everything (the ranking is defined pair by
pair). Peak memory is the per-row columns plus ``eval_stream``'s block budgets, not the folder.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from csmae.retrieval.emb_stream import scan
from csmae.retrieval.embeddings import Embeddings
from csmae.retrieval.eval_stream import (
    CrossSource,
    Direction,
    FolderSource,
    VectorSource,
    as_source,
    check_finite,
    columns,
    fingerprints,
    search_blocks,
)
from csmae.retrieval.metrics import ranked_metrics
from csmae.retrieval.resume import SearchCache, search_key
from csmae.retrieval.topk import TopKStats, merge_topk

log = logging.getLogger(__name__)

DEFAULT_KS = (5, 10, 20, 100)


def cross_model_embeddings(
    parts: Mapping[str, Embeddings], *, sources: Mapping[str, str] | None = None
) -> Embeddings:
    """One :class:`Embeddings` whose rows of sensor ``s`` are the ``s`` rows of ``parts[s]``.

    Args:
        parts: sensor name -> the embeddings describing that sensor's items (e.g.
            ``{"s1": load_embeddings("emb/mae_s1"), "s2": load_embeddings("emb/mae_s2")}``).
        sources: sensor name -> where ``parts[s]`` came from (folder path), named in errors and
            recorded in the manifest.

    Raises:
        ValueError: a part lacks its sensor, the dimensions or label names differ, or the parts do
            not describe the same pairs with the same splits and labels (the message names the
            folders and a few of the disagreeing ids).
    """
    rows, where = _cross_rows(parts, {s: e.dim for s, e in parts.items()}, sources)
    rows.vectors = np.concatenate([parts[s].vectors[where[s]] for s in where])
    return rows


def cross_model_source(
    parts: Mapping[str, VectorSource], *, sources: Mapping[str, str] | None = None
) -> CrossSource:
    """:func:`cross_model_embeddings` over sources (e.g. folders read shard by shard): the same rows
    and checks, the vectors read block by block from each sensor's own source."""
    rows, where = _cross_rows({s: p.rows for s, p in parts.items()}, {s: p.dim for s, p in parts.items()},
                              sources)  # fmt: skip
    return CrossSource(rows=rows, parts=dict(parts), where=where, dim=next(iter(parts.values())).dim)


def _cross_rows(
    parts: Mapping[str, Embeddings], dims: Mapping[str, int], sources: Mapping[str, str] | None
) -> tuple[Embeddings, dict[str, np.ndarray]]:
    """The per-row columns of the cross-model combination (vectors of width 0) and, per sensor,
    the positions of its rows in its part."""
    if not parts:
        raise ValueError("cross_model_embeddings needs at least one sensor")
    src = {s: (sources or {}).get(s) or f"the {s} embeddings" for s in parts}
    sel: dict[str, Embeddings] = {}
    where: dict[str, np.ndarray] = {}
    for s, emb in parts.items():
        if s not in emb.sensor_names:
            raise ValueError(
                f"{src[s]} has no {s} vectors (it has {emb.sensor_names}); cannot use it for {s}"
            )
        where[s] = np.flatnonzero(emb.sensors == s)
        sel[s] = columns(emb, where[s])
    names = list(sel)
    first = names[0]
    if len({dims[s] for s in names}) != 1:
        raise ValueError(
            "cross-model descriptors must have one dimension to be compared across sensors, got "
            + ", ".join(f"D={dims[s]} for {s} ({src[s]})" for s in names)
        )
    for s in names[1:]:
        if sel[s].label_names != sel[first].label_names:
            raise ValueError(f"{src[s]} and {src[first]} use different label names")
        _check_same_pairs(sel[first], sel[s], src[first], src[s])
    man0 = parts[first].manifest
    man = {k: v for k, v in man0.items() if k not in ("model", "sensors", "precision", "shards", "count")}
    man["sensors"] = {s: (parts[s].manifest.get("sensors") or {}).get(s, {}) for s in names}
    per_sensor = {s: {**(parts[s].manifest.get("model") or {}), "embeddings": src[s]} for s in names}
    man["model"] = {
        "name": "cross-model: " + ", ".join(f"{s} from {per_sensor[s].get('name')}" for s in names),
        "per_sensor": per_sensor,
        "dim": dims[first],
    }
    precisions = {s: parts[s].manifest.get("precision") for s in names}
    man["precision"] = precisions[first] if len(set(precisions.values())) == 1 else precisions
    fields = ("ids", "sensors", "splits", "labels", "vectors")
    cols = {f: np.concatenate([getattr(sel[s], f) for s in names]) for f in fields}
    return Embeddings(**cols, manifest=man), where


def _check_same_pairs(a: Embeddings, b: Embeddings, a_src: str, b_src: str) -> None:
    """Raise ValueError unless ``a`` and ``b`` hold the same pair ids with the same splits and labels."""
    a_pos = {pid: i for i, pid in enumerate(a.ids.tolist())}
    b_pos = {pid: i for i, pid in enumerate(b.ids.tolist())}
    only_a = [p for p in a_pos if p not in b_pos]
    only_b = [p for p in b_pos if p not in a_pos]
    if only_a or only_b:
        raise ValueError(
            f"{a_src} and {b_src} describe different pairs: {len(only_a)} id(s) only in {a_src} "
            f"(e.g. {only_a[:3]}), {len(only_b)} only in {b_src} (e.g. {only_b[:3]}); embed the same dataset "
            "with both models"
        )
    ia = np.fromiter(a_pos.values(), np.int64, len(a_pos))
    ib = np.fromiter((b_pos[p] for p in a_pos), np.int64, len(a_pos))
    keys = list(a_pos)
    bad_split = np.flatnonzero(a.splits[ia].astype(str) != b.splits[ib].astype(str))
    if len(bad_split):
        raise ValueError(
            f"{a_src} and {b_src} give different splits to {len(bad_split)} pair(s), e.g. "
            + ", ".join(f"{keys[i]}: {a.splits[ia[i]]!r} vs {b.splits[ib[i]]!r}" for i in bad_split[:3])
        )
    if a.labels.shape[1] != b.labels.shape[1]:
        raise ValueError(f"{a_src} has {a.labels.shape[1]} labels per item, {b_src} {b.labels.shape[1]}")
    bad_lab = np.flatnonzero((a.labels[ia] != b.labels[ib]).any(axis=1))
    if len(bad_lab):
        raise ValueError(
            f"{a_src} and {b_src} give different labels to {len(bad_lab)} pair(s), e.g. "
            f"{[keys[i] for i in bad_lab[:3]]}"
        )


def direction_name(query: str, archive: str) -> str:
    return f"{query}->{archive}"


@dataclass
class ProtocolResult:
    """Metrics per direction plus what is needed to draw grids (rankings, archive rows)."""

    metrics: dict[str, dict[str, dict[int, float]]]
    protocol: dict[str, Any]
    timing: dict[str, Any]
    queries: dict[str, Embeddings] = field(default_factory=dict)
    archives: dict[str, Embeddings] = field(default_factory=dict)
    rankings: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "directions": self.metrics, "timing": self.timing}


def _own_index(q_ids: np.ndarray, a_ids: np.ndarray) -> np.ndarray:
    """For each query id, the archive position of the same id (-1 if absent)."""
    pos = {pid: i for i, pid in enumerate(a_ids.tolist())}
    return np.fromiter((pos.get(pid, -1) for pid in q_ids.tolist()), dtype=np.int64, count=len(q_ids))


def _splits_overlap(qs: str | Sequence[str], as_: str | Sequence[str]) -> bool:
    if qs == "all" or as_ == "all":
        return True
    a = {qs} if isinstance(qs, str) else set(qs)
    b = {as_} if isinstance(as_, str) else set(as_)
    return bool(a & b)


def run_protocol(
    emb: Embeddings | VectorSource,
    *,
    query_split: str | Sequence[str] = "val",
    archive_split: str | Sequence[str] = "test",
    ks: Sequence[int] = DEFAULT_KS,
    exclude_own_pair: bool = False,
    sensors: Sequence[str] | None = None,
    mixed: bool = True,
    precision: str = "auto",
    block_size: int = 1024,
    on_progress: Callable[[str, int, int], None] | None = None,
    resume_dir: str | os.PathLike[str] | None = None,
) -> ProtocolResult:
    """Run every direction between the sensors of ``emb``; see the module docstring.

    ``emb``: in-memory embeddings, or a source that reads them block by block
    (:func:`evaluation_source` of a folder): the vectors are searched in blocks either way
    (:mod:`csmae.retrieval.eval_stream`), with results identical to one search over everything.
    ``block_size``: queries per score tile at most (fewer when a tile would exceed
    ``eval_stream.TILE_BYTES``).
    ``precision``: the exact search's candidate pass (``"auto"``: bf16 where this CPU runs bf16
    matmuls natively, else fp32; identical results either way).
    ``resume_dir``: keep each finished search there (see :mod:`csmae.retrieval.resume`); a rerun
    with the same inputs loads them instead of searching again. The caller removes it when done.
    The result's ``queries`` / ``archives`` hold the rows' columns without their vectors.
    """
    source = as_source(emb)
    rows = source.rows
    sens = [s for s in (sensors or rows.sensor_names)]
    if not sens:
        raise ValueError("the embeddings hold no sensor")
    unknown = [s for s in sens if s not in rows.sensor_names]
    if unknown:
        raise ValueError(f"the embeddings have no {unknown} vectors (they have {rows.sensor_names})")
    from csmae.models.precision import choose_precision

    search = choose_precision(precision, "cpu", what="exact search candidate pass")
    precision = search.precision
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    overlap = _splits_overlap(query_split, archive_split)
    q_pos = {s: np.flatnonzero(rows.mask(sensor=s, split=query_split)) for s in sens}
    a_pos = {s: np.flatnonzero(rows.mask(sensor=s, split=archive_split)) for s in sens}
    queries = {s: columns(rows, q_pos[s]) for s in sens}
    archives = {s: columns(rows, a_pos[s]) for s in sens}
    for s in sens:
        if len(queries[s]) == 0:
            raise ValueError(
                f"no {s} queries in split {query_split!r} (splits present: "
                f"{sorted({str(x) for x in rows.splits.tolist()})})"
            )
        if len(archives[s]) == 0:
            raise ValueError(f"the {s} archive (split {archive_split!r}) is empty")
        check_finite(source, q_pos[s], f"{s} query")
        check_finite(source, a_pos[s], f"{s} archive")
    cache = SearchCache(resume_dir) if resume_dir is not None else None
    digest: dict[str, str] = {}
    if cache is not None:  # keys of the inputs (a folder's recorded checksums: no pass over it)
        sides = {**{f"q:{s}": q_pos[s] for s in sens}, **{f"a:{s}": a_pos[s] for s in sens}}
        digest = fingerprints(source, sides)
    topk: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    metrics: dict[str, dict[str, dict[int, float]]] = {}
    notes: list[str] = []
    timing: dict[str, Any] = {}
    rankings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    todo: list[Direction] = []
    resumed: dict[str, bool] = {}
    keys: dict[str, str] = {}
    avails: dict[str, int] = {}
    for qs in sens:
        for a_s in sens:
            name = direction_name(qs, a_s)
            excl = None
            if overlap and (qs == a_s or exclude_own_pair):
                excl = _own_index(queries[qs].ids, archives[a_s].ids)[:, None]
            n_ex = int((excl >= 0).any()) if excl is not None else 0
            avails[name] = avail = len(archives[a_s]) - n_ex
            kmax = min(ks[-1], avail)
            keys[name] = search_key(digest[f"q:{qs}"], digest[f"a:{a_s}"], kmax, excl) if cache else ""
            found = cache.load(name, keys[name]) if cache else None
            resumed[name] = found is not None
            if found is not None:
                topk[(qs, a_s)] = found
                if on_progress:
                    on_progress(name, len(queries[qs]), 0)
            else:
                todo.append(Direction(name, kmax, excl, query=qs, archive=a_s, stats=TopKStats()))

    def finished(d: Direction, result: tuple[np.ndarray, np.ndarray]) -> None:
        if cache:  # kept at once: a run killed later resumes from here
            cache.save(d.name, keys[d.name], *result)

    if todo:
        got = search_blocks(
            source, q_pos, a_pos, todo, precision=precision, block_size=block_size, on_done=finished,
            progress=(lambda name, n: on_progress(name, n, 0)) if on_progress else None,
        )  # fmt: skip
        for d in todo:
            topk[(d.query, d.archive)] = got[d.name]
    searched = {d.name: d for d in todo}
    for qs in sens:
        for a_s in sens:
            name = direction_name(qs, a_s)
            t1 = time.perf_counter()
            avail = avails[name]
            use = [k for k in ks if k <= avail]
            if len(use) < len(ks):
                notes.append(f"{name}: k={[k for k in ks if k > avail]} skipped (archive has {avail} items)")
            if use:
                metrics[name] = ranked_metrics(
                    queries[qs].labels, archives[a_s].labels, topk[(qs, a_s)][1], use
                )
                rankings[name] = topk[(qs, a_s)]
            done = searched.get(name)
            st = done.stats if done is not None else TopKStats()
            timing[name] = {
                "search_s": round(done.seconds if done is not None else 0.0, 3),
                "matmul_s": round(st.matmul_s, 3),
                "topk_s": round(st.topk_s, 3),
                "rescore_s": round(st.rescore_s, 3),
                "candidates_per_query": round(st.candidates / max(1, st.queries), 2),
                "metrics_s": round(time.perf_counter() - t1, 3),
            }
            if resumed[name]:
                timing[name]["resumed"] = True
    if mixed and len(sens) > 1:
        offsets = np.cumsum([0] + [len(archives[s]) for s in sens])[:-1].tolist()
        cat = {
            f: np.concatenate([getattr(archives[s], f) for s in sens])
            for f in ("ids", "sensors", "splits", "labels", "vectors")
        }
        mixed_arch = Embeddings(**cat, manifest=rows.manifest)
        archives["mixed"] = mixed_arch
        for qs in sens:
            name = direction_name(qs, "mixed")
            t0 = time.perf_counter()
            parts = [topk[(qs, a_s)] for a_s in sens]
            avail = sum(p[1].shape[1] for p in parts)
            n_total = len(mixed_arch)
            kmax = min(ks[-1], avail)
            s_, i_ = merge_topk(parts, offsets, kmax)
            use = [k for k in ks if k <= avail]
            if len(use) < len(ks):
                notes.append(
                    f"{name}: k={[k for k in ks if k > avail]} skipped (archive has {n_total} items)"
                )
            if use:
                metrics[name] = ranked_metrics(queries[qs].labels, mixed_arch.labels, i_, use)
                rankings[name] = (s_, i_)
            timing[name] = {"merge_and_metrics_s": round(time.perf_counter() - t0, 3)}
    protocol = {
        "query_split": query_split,
        "archive_split": archive_split,
        "ks": ks,
        "exclude_self": overlap,
        "exclude_own_pair": bool(exclude_own_pair and overlap),
        "n_queries": {s: len(queries[s]) for s in sens},
        "n_archive": {s: len(archives[s]) for s in archives},
        "ranking": "cosine similarity (L2-normalised), exact, ties broken by archive order",
        "mixed_archive": "all S1 archive items followed by all S2 archive items" if len(sens) > 1 else None,
        "notes": notes,
        "model": (source.manifest.get("model") or {}),
        "embedding_precision": source.manifest.get("precision"),
        "search_candidates": precision,
        "search_candidates_choice": search.describe(),
    }
    for n in notes:
        log.warning(n)
    return ProtocolResult(
        metrics=metrics,
        protocol=protocol,
        timing=timing,
        queries=queries,
        archives=archives,
        rankings=rankings,
    )


def evaluation_source(
    folder: str | os.PathLike[str], *, query_split: str | Sequence[str] | None = None
) -> FolderSource:
    """An embeddings folder as an evaluation source: per-row columns now, vectors shard by shard.

    ``query_split``: keep the vectors of that split's rows (the queries) from the first pass over
    the folder, up to ``eval_stream.QUERY_BYTES`` (one pass less)."""
    import csmae.retrieval.eval_stream as es

    keep = None
    if query_split is not None and query_split != "all":
        wanted = [query_split] if isinstance(query_split, str) else list(query_split)
        keep = lambda part: np.isin(part["splits"].astype(str), wanted)  # noqa: E731
    return FolderSource(scan(folder, meta=False, keep=keep, keep_bytes=es.QUERY_BYTES))


def evaluate_embeddings(
    emb: Embeddings | VectorSource | str | os.PathLike[str],
    *,
    query_split: str | Sequence[str] = "val",
    archive_split: str | Sequence[str] = "test",
    ks: Sequence[int] = DEFAULT_KS,
    exclude_own_pair: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Metrics of every direction as a JSON-ready dict {"protocol", "directions", "timing"}.

    ``directions[name][metric][k]`` with name like ``"s1->s2"`` or ``"s2->mixed"``. ``emb`` may be an
    embeddings folder path. Extra keyword arguments go to :func:`run_protocol`.
    """
    if isinstance(emb, (str, os.PathLike)):
        emb = evaluation_source(emb, query_split=query_split)
    return run_protocol(
        emb,
        query_split=query_split,
        archive_split=archive_split,
        ks=ks,
        exclude_own_pair=exclude_own_pair,
        **kwargs,
    ).to_dict()
