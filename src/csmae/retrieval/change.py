"""Change detection between two periods, per place, as pure functions (numpy in, numpy out).

A place's descriptor in a period is the mean of the L2-normalised descriptors of its acquisitions
by one sensor in that period, renormalised (averaging over dates damps speckle, illumination and
noise). Its change score between a period ``before`` and a period ``after`` is the cosine
distance ``1 - cos(d_before, d_after)`` between the two period descriptors, which may come from
different sensors (S2 before, S1 after: one descriptor space, so a cloudy S2 after can be
replaced by S1); the sensor pairing is recorded per place.

Pairings: ``"s2->s2"``, ``"s1->s1"``, ``"s2->s1"``, ``"s1->s2"`` (before sensor -> after sensor), or
``"auto"``: per place the first pairing of :data:`AUTO_ORDER` that has acquisitions in both
periods. Distances of different pairings are not on one scale (two sensors' descriptors of the same
ground are further apart than one sensor's), so ``auto`` ranks by a robust z-score within each
pairing: ``(d - median) / (1.4826 * MAD)`` over the places scored with that pairing.

Change-like search (:func:`change_vectors`, :func:`similar_changes`): the places whose change
vector (after minus before descriptor, centred over the places) points the same way as a query
place's.

Also here: the pixel-difference baseline (mean absolute difference of the period-mean images, one
sensor only), ROC AUC and precision@k of a ranking against known changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

PAIRINGS = ("s2->s2", "s1->s1", "s2->s1", "s1->s2")
AUTO_ORDER = PAIRINGS


@dataclass(frozen=True)
class Period:
    """A half-open time interval ``[start, end)`` (numpy datetime64[s], UTC)."""

    start: np.datetime64
    end: np.datetime64

    @classmethod
    def parse(cls, text: str) -> Period:
        """``"2018-04-01/2018-07-01"`` (ISO dates or datetimes, UTC; end exclusive).

        Raises:
            ValueError: not ``START/END`` or END is not after START.
        """
        parts = str(text).split("/")
        if len(parts) != 2:
            raise ValueError(f"a period is START/END (ISO dates, e.g. 2018-04-01/2018-07-01), got {text!r}")
        try:
            start, end = (np.datetime64(p.strip().rstrip("Z"), "s") for p in parts)
        except ValueError:
            raise ValueError(f"a period is START/END with ISO dates, got {text!r}") from None
        if not end > start:
            raise ValueError(f"period {text!r}: END must be after START")
        return cls(start, end)

    def contains(self, times: np.ndarray) -> np.ndarray:
        """(N,) bool: ``times`` (datetime64, NaT = never) inside the period."""
        t = np.asarray(times).astype("datetime64[s]")
        return ~np.isnat(t) & (t >= self.start) & (t < self.end)

    def __str__(self) -> str:
        def show(t: np.datetime64) -> str:
            text = str(t)
            return text[:10] if text.endswith("T00:00:00") else text

        return f"{show(self.start)}/{show(self.end)}"


def parse_pairing(pairing: str) -> tuple[str, str]:
    """``"s2->s1"`` -> ("s2", "s1")."""
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown sensor pairing {pairing!r}; expected one of {list(PAIRINGS)} or 'auto'")
    a, b = pairing.split("->")
    return a, b


class RowSource(Protocol):
    """Descriptors read on demand: ``source[idx]`` = (len(idx), D) rows for an index array (e.g. an
    index's stored vectors: :class:`csmae.retrieval.change_index.IndexRows`)."""

    shape: tuple[int, int]

    def __len__(self) -> int: ...

    def __getitem__(self, idx: Any) -> np.ndarray: ...


def _objects(values: Any) -> np.ndarray:
    """A per-row column (array, list, pandas Series, any iterable) as a 1-D object array."""
    if isinstance(values, np.ndarray) and values.dtype == object and values.ndim == 1:
        return values
    return np.asarray(list(values), dtype=object)


def _has_place(places: Any) -> np.ndarray:
    """(N,) bool: the row has a place key (None and NaN, as pandas writes a missing one, have not)."""
    return _place_codes(places)[1] >= 0


def _place_codes(places: Any) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct place keys (K,) object, code per row (N,) int64: its key's position, -1 for a
    row without a place: None, NaN, "" or anything but a string).

    One hash pass over the rows (:func:`pandas.factorize`) and a sort of the K distinct keys, instead
    of a sort of N strings: the codes of many masks then come from one factorisation.
    """
    import pandas as pd

    codes, uniques = pd.factorize(_objects(places), use_na_sentinel=True)  # None/NaN -> -1
    uniques = np.asarray(uniques, dtype=object)
    good = np.array([isinstance(u, str) and bool(u) for u in uniques], dtype=bool)
    keys = uniques[good].astype(str)
    order = np.argsort(keys, kind="stable")
    remap = np.full(len(uniques) + 1, -1, np.int64)  # the last entry maps code -1 (no place)
    remap[np.flatnonzero(good)[order]] = np.arange(len(keys))
    return keys[order].astype(object), remap[codes]


def _group_sum(inv: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups, F) float64 sums of the rows of ``values`` (N, F) by group ``inv`` (N,), each group
    summed in row order (as a loop would: ((0 + v_i) + v_j) + ...), every group non-empty.

    One sparse (n_groups, N) indicator matrix times ``values``: scipy's CSR product adds each
    group's rows in index order, one pass, no sorted copy of ``values``.
    """
    from scipy.sparse import csr_matrix

    inv = np.asarray(inv, dtype=np.int64)
    order = np.argsort(inv, kind="stable")  # row order within each group
    indptr = np.zeros(n_groups + 1, np.int64)
    np.cumsum(np.bincount(inv, minlength=n_groups), out=indptr[1:])
    ind = csr_matrix((np.ones(len(inv)), order, indptr), shape=(n_groups, len(inv)))
    return np.asarray(ind @ np.asarray(values, dtype=np.float64))


def _unit_rows(vectors: Any, rows: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """(len(rows), D) float64 unit rows ``vectors[rows]`` (norm floored at 1e-12), read ``chunk``
    rows at a time: ``vectors`` may be an array or any object that gives rows for an index array
    (an index's stored vectors), and no full float32 copy is made."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), int(np.shape(vectors)[1])), np.float64)
    for lo in range(0, len(rows), chunk):
        v = out[lo:lo + chunk]
        v[:] = vectors[rows[lo:lo + chunk]]
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return out


def _cell(codes: np.ndarray, vectors: Any, mask: np.ndarray, n_keys: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key codes present (P,) sorted, unit descriptors (P, D) float32, acquisitions (P,)) of the rows
    in ``mask`` (rows with a code >= 0)."""
    sel = np.flatnonzero(np.asarray(mask, dtype=bool) & (codes >= 0))
    if len(sel) == 0:
        empty = np.zeros((0, int(np.shape(vectors)[1])), np.float32)
        return np.zeros(0, np.int64), empty, np.zeros(0, np.int64)
    c = codes[sel]
    counts_all = np.bincount(c, minlength=n_keys)
    present = np.flatnonzero(counts_all)
    pos = np.full(n_keys, -1, np.int64)
    pos[present] = np.arange(len(present))
    sums = _group_sum(pos[c], _unit_rows(vectors, sel), len(present))
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return present, sums.astype(np.float32), counts_all[present]


def period_descriptors(places: np.ndarray, vectors: np.ndarray, mask: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(place keys (P,), unit descriptors (P, D), acquisitions per place (P,)) of the rows in ``mask``.

    Keys are sorted; rows without a place (None/NaN) are left out.
    """
    keys, codes = _place_codes(places)
    present, desc, counts = _cell(codes, vectors, mask, len(keys))
    return keys[present], desc, counts


class _Cells:
    """Period descriptors per (sensor, period) of one set of rows, each computed once."""

    def __init__(self, places: Any, sensors: np.ndarray, times: np.ndarray, vectors: Any,
                 valid: np.ndarray):
        self.keys, self.codes = _place_codes(places)
        self.sensors, self.times, self.vectors = sensors, times, vectors
        self.valid = valid & (self.codes >= 0)
        self._done: dict[tuple[str, Period], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def get(self, sensor: str, period: Period) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = (sensor, period)
        if key not in self._done:
            mask = self.valid & (self.sensors == sensor) & period.contains(self.times)
            self._done[key] = _cell(self.codes, self.vectors, mask, len(self.keys))
        return self._done[key]

    def pair(self, pairing: str, before: Period, after: Period
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(key codes seen in both periods (sorted), before descriptors, after descriptors, n_before,
        n_after) of a sensor pairing."""
        a, b = parse_pairing(pairing)
        cb, db, nb = self.get(a, before)
        ca, da, na = self.get(b, after)
        common, ib, ia = np.intersect1d(cb, ca, assume_unique=True, return_indices=True)
        return common, db[ib], da[ia], nb[ib], na[ia]


@dataclass
class ChangeScores:
    """Places scored for change between two periods, ranked (highest score first)."""

    places: np.ndarray  # (P,) place keys
    score: np.ndarray  # (P,) cosine distance between the period descriptors (0 = same, 2 = opposite)
    rank_score: np.ndarray  # (P,) what the ranking uses: score, or its z within the pairing (auto)
    pairing: np.ndarray  # (P,) "s2->s1"-style sensor pairing of each place
    n_before: np.ndarray  # (P,) acquisitions averaged in the before period
    n_after: np.ndarray  # (P,) acquisitions averaged in the after period

    def __len__(self) -> int:
        return len(self.places)

    def top(self, k: int) -> ChangeScores:
        return self.take(np.arange(min(k, len(self))))

    def take(self, idx: np.ndarray) -> ChangeScores:
        return ChangeScores(*(getattr(self, f)[idx] for f in ("places", "score", "rank_score", "pairing",
                                                                "n_before", "n_after")))

    def to_records(self) -> list[dict[str, Any]]:
        return [{"rank": i + 1, "place": str(p), "score": float(s), "rank_score": float(r), "pairing": str(q),
                 "n_before": int(a), "n_after": int(b)}
                for i, (p, s, r, q, a, b) in enumerate(zip(self.places, self.score, self.rank_score,
                                                           self.pairing, self.n_before, self.n_after,
                                                           strict=True))]


def robust_z(x: np.ndarray) -> np.ndarray:
    """``(x - median) / (1.4826 * MAD)`` (MAD 0: divided by 1)."""
    med = np.median(x) if len(x) else 0.0
    mad = 1.4826 * np.median(np.abs(x - med)) if len(x) else 1.0
    return (x - med) / (mad if mad > 0 else 1.0)


def change_scores(places: Any, sensors: Any, times: Any, vectors: np.ndarray | RowSource, *,
                  before: Period, after: Period, pairing: str = "auto", valid: np.ndarray | None = None
                  ) -> ChangeScores:
    """Score every place seen in both periods (see the module docstring), highest change first.

    Args:
        places, sensors, times: per row: place key (None: no place), sensor name, acquisition time
            (datetime64 or ISO strings; NaT/None never falls in a period).
        vectors: (N, D) descriptors (an array, or a :class:`RowSource` read a chunk at a time).
        before, after: the two periods.
        pairing: ``"s2->s1"``-style sensor pairing, or ``"auto"``.
        valid: (N,) bool rows that may be used (e.g. not cloudy); default all.
    """
    places, sensors = _objects(places), _objects(sensors)
    times = np.asarray(times, dtype="datetime64[s]")
    if not hasattr(vectors, "shape"):
        vectors = np.asarray(vectors)
    if not (len(places) == len(sensors) == len(times) == len(vectors)):
        raise ValueError("places, sensors, times and vectors must have one entry per row")
    ok = np.ones(len(places), bool) if valid is None else np.asarray(valid, dtype=bool)
    pairings = AUTO_ORDER if pairing == "auto" else (pairing,)
    if pairing != "auto":
        parse_pairing(pairing)
    cells = _Cells(places, sensors, times, vectors, ok)
    taken = np.zeros(len(cells.keys), bool)  # auto: places scored by an earlier pairing
    parts: list[tuple[np.ndarray, ...]] = []
    for pr in pairings:
        common, db, da, nb, na = cells.pair(pr, before, after)
        dist = 1.0 - np.sum(db.astype(np.float64) * da, axis=1)
        keep = ~taken[common]
        common, dist, nb, na = common[keep], dist[keep], nb[keep], na[keep]
        taken[common] = True
        rank = robust_z(dist) if pairing == "auto" else dist
        parts.append((cells.keys[common], dist, rank, np.full(len(common), pr, dtype=object), nb, na))
    cols = [np.concatenate([p[j] for p in parts]) for j in range(6)]
    order = np.lexsort((cols[0].astype(str), -cols[2]))  # score descending, ties by place key
    return ChangeScores(*(c[order] for c in cols))


def change_vectors(places: Any, sensors: Any, times: Any, vectors: np.ndarray | RowSource, *, before: Period,
                   after: Period, pairing: str, valid: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(place keys (P,), change vectors (P, D)) of the places seen in both periods with ``pairing``.

    A place's change vector is its after descriptor minus its before descriptor (unit period
    descriptors), minus the mean of that difference over all those places: the centring removes
    what every place shares (the season, and for a cross-sensor pairing the offset between the two
    sensors' descriptors), so what is left is the place's own change. Keys sorted.
    """
    parse_pairing(pairing)
    places, sensors = _objects(places), _objects(sensors)
    times = np.asarray(times, dtype="datetime64[s]")
    ok = np.ones(len(places), bool) if valid is None else np.asarray(valid, dtype=bool)
    cells = _Cells(places, sensors, times, vectors, ok)
    common, db, da, _, _ = cells.pair(pairing, before, after)
    delta = da.astype(np.float64) - db
    if len(delta):
        delta -= delta.mean(axis=0, keepdims=True)
    return cells.keys[common], delta.astype(np.float32)


def similar_changes(keys: np.ndarray, deltas: np.ndarray, query: str) -> tuple[np.ndarray, np.ndarray]:
    """Places whose change resembles ``query``'s: (keys, cosine of the change vectors), best first.

    The query place itself is left out; ties are broken by place key.

    Raises:
        ValueError: ``query`` is not among ``keys`` (not seen in both periods).
    """
    pos = {str(k): i for i, k in enumerate(keys)}
    if str(query) not in pos:
        raise ValueError(f"place {query!r} has no acquisitions in both periods (with this pairing); "
                         f"{len(keys)} places have")
    d = np.asarray(deltas, dtype=np.float64)
    unit = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit[pos[str(query)]]
    others = np.array([i for i in range(len(keys)) if i != pos[str(query)]], dtype=np.int64)
    order = others[np.lexsort((np.asarray(keys, dtype=object)[others].astype(str), -sims[others]))]
    return np.asarray(keys, dtype=object)[order], sims[order]


def pixel_change_scores(places: Any, sensors: Any, times: Any, images: np.ndarray, *,
                        before: Period, after: Period, sensor: str, valid: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The pixel-difference baseline: (place keys, mean |after - before| of the period-mean images).

    ``images``: (N, C, H, W) of ``sensor`` rows (other rows ignored), in the sensor's normalised
    units. One sensor only: pixels of two sensors cannot be compared. Keys sorted.
    """
    places = np.asarray(list(places), dtype=object)
    sensors = np.asarray(list(sensors), dtype=object)
    times = np.asarray(times, dtype="datetime64[s]")
    ok = (np.ones(len(places), bool) if valid is None else np.asarray(valid, bool)) & (sensors == sensor)
    ok &= _has_place(places)
    means = []
    for period in (before, after):
        sel = np.flatnonzero(ok & period.contains(times))
        keys, inv = np.unique(np.asarray(places[sel]).astype(str), return_inverse=True)
        flat = np.asarray(images)[sel].reshape(len(sel), -1)
        if len(sel) == 0:
            means.append((keys, np.zeros((0, flat.shape[1]))))
            continue
        sums = _group_sum(inv, flat, len(keys))
        means.append((keys, sums / np.bincount(inv, minlength=len(keys))[:, None]))
    (kb, mb), (ka, ma) = means
    common, ib, ia = np.intersect1d(kb, ka, return_indices=True)
    return common.astype(object), np.abs(ma[ia] - mb[ib]).mean(axis=1)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` labels (ties count half).

    The Mann-Whitney form: the probability that a random positive scores above a random negative.

    Raises:
        ValueError: no positives or no negatives.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC AUC needs positives and negatives, got {n_pos} and {n_neg}")
    ranks = average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` ascending, tied values sharing their average rank."""
    order = np.argsort(x, kind="stable")
    _, inv, counts = np.unique(x[order], return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ranks = np.empty(len(x))
    ranks[order] = (first + (counts + 1) / 2)[inv]
    return ranks


def precision_at_k(scores: np.ndarray, positive: np.ndarray, k: int) -> float:
    """Fraction of true changes among the ``k`` highest scores (ties broken by position)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    if not 1 <= k <= len(s):
        raise ValueError(f"k must be in 1..{len(s)}, got {k}")
    top = np.argsort(-s, kind="stable")[:k]
    return float(y[top].mean())
