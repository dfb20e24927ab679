"""Fused S1+S2 queries: one descriptor from both sensors' images of one place and (nearly) one date.

Fusion (documented, parameter-free): the mean of the two L2-normalised descriptors, renormalised::

    fuse(v1, v2) = (v1/|v1| + v2/|v2|) / |v1/|v1| + v2/|v2||

It is the point of the shared descriptor space halfway (on the sphere) between the two views, so
its cosine to an archive item is proportional to the sum of the two views' cosines: an item must
resemble the place in both sensors to rank first, and the information of one sensor that the other
lacks (S2 colour, S1 structure through clouds) is kept. Two views of the same pair (same id: a
co-registered S1/S2 pair, days apart) are fused; a query by place with both sensors needs one
acquisition of each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from csmae.retrieval.embeddings import Embeddings
from csmae.retrieval.normalize import l2_normalize

#: the sensor name of a fused query
FUSED = "s1+s2"


def fuse(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """(N, D) fused unit descriptors of (N, D) S1 and S2 descriptors (see the module docstring)."""
    a = l2_normalize(np.atleast_2d(np.asarray(s1, dtype=np.float32)))
    b = l2_normalize(np.atleast_2d(np.asarray(s2, dtype=np.float32)))
    if a.shape != b.shape:
        raise ValueError(f"cannot fuse S1 descriptors {a.shape} with S2 descriptors {b.shape}")
    return l2_normalize(a + b)


def fused_pairs(emb: Embeddings, *, split: str | Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
    """(ids, fused vectors, labels) of the pairs of ``emb`` (in ``split``) that have both sensors.

    Pairs keep the order of their S1 rows.
    """
    s1, s2 = emb.select(sensor="s1", split=split), emb.select(sensor="s2", split=split)
    pos = {pid: i for i, pid in enumerate(s2.ids.tolist())}
    keep = [i for i, pid in enumerate(s1.ids.tolist()) if pid in pos]
    j = np.array([pos[s1.ids[i]] for i in keep], dtype=np.int64)
    i = np.array(keep, dtype=np.int64)
    if len(i) == 0:
        empty = np.zeros((0, emb.labels.shape[1]), bool)
        return np.empty(0, object), np.zeros((0, emb.dim), np.float32), empty
    return s1.ids[i], fuse(s1.vectors[i], s2.vectors[j]), s1.labels[i]


def fused_query_map(emb: Embeddings, *, k: int = 10, query_split: str = "val", archive_split: str = "test",
                    archive_sensors: Sequence[str] = ("s1", "s2")) -> dict[str, Any]:
    """mAP@k of the same places queried by S1 alone, S2 alone and S1+S2 fused (method.md protocol).

    Queries: the ``query_split`` pairs with both sensors; archive: the ``archive_split`` items of
    ``archive_sensors`` (default both: the mixed archive a user searches). Labels decide relevance.

    Returns:
        ``{"s1": mAP, "s2": mAP, "s1+s2": mAP, "queries": n, "archive": n}``.
    """
    from csmae.retrieval.metrics import evaluate

    ids, fused, labels = fused_pairs(emb, split=query_split)
    if len(ids) == 0:
        raise ValueError(f"no {query_split} pair has both S1 and S2 descriptors: nothing to fuse")
    arch = emb.select(np.isin(emb.sensors.astype(str), list(archive_sensors)), split=archive_split)
    out: dict[str, Any] = {}
    for s in ("s1", "s2"):
        one = emb.select(sensor=s, split=query_split)
        pos = {pid: i for i, pid in enumerate(one.ids.tolist())}
        rows = np.array([pos[p] for p in ids], dtype=np.int64)
        out[s] = evaluate(one.vectors[rows], labels, arch.vectors, arch.labels, ks=[k])["map"][k]
    out[FUSED] = evaluate(fused, labels, arch.vectors, arch.labels, ks=[k])["map"][k]
    out = {key: float(v) for key, v in out.items()}
    return {**out, "queries": int(len(ids)), "archive": int(len(arch))}


def is_fused(sensor: str) -> bool:
    """Whether a query sensor name asks for a fused query (``"s1+s2"``, also written ``"s2+s1"``)."""
    return sorted(str(sensor).split("+")) == ["s1", "s2"]


def fused_vector_of(core: Any, patch_id: str) -> tuple[np.ndarray, list[int]]:
    """(fused (D,) descriptor, its two index rows) of archive pair ``patch_id`` (a search core).

    Raises:
        ValueError: the archive does not hold both the S1 and the S2 item of ``patch_id``.
    """
    rows, missing = [], []
    for s in ("s1", "s2"):
        try:
            rows.append(int(core.row_of(patch_id, s)))
        except (KeyError, ValueError):
            missing.append(s)
    if len(missing) == 2:
        raise KeyError(f"no patch {patch_id!r} in the index")
    if missing:
        raise ValueError(f"a fused {FUSED} query needs both the S1 and the S2 item of {patch_id!r}; the "
                         f"archive has no {' and no '.join(missing)} item of it")
    v1, v2 = (core.index.reconstruct(r) for r in rows)
    return fuse(v1, v2)[0], rows


def search_fused_by_id(core: Any, patch_id: str, *, target: str = "any", k: int = 10,
                       exclude_self: bool = True, where: Any = None) -> list[Any]:
    """Search with the fused S1+S2 descriptor of archive pair ``patch_id`` (a search core's hits).

    With ``exclude_self`` both of the pair's own items are left out of the results. Hits report the
    labels they share with the pair.
    """
    core.check_target(target)
    vec, own = fused_vector_of(core, patch_id)
    extra = len(own) if exclude_self else 0
    scores, rows = core.index.search(vec[None], k + extra, target=target, where=where)
    r = rows[0].copy()
    if exclude_self:
        r[np.isin(r, own)] = -1
    labels = core.index.columns.labels[own[0]]
    return list(core.hits(scores[0], r, k, labels))
