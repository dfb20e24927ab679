"""Exact top-k inner-product search over large matrices, in blocks, with a canonical tie order.

The ranking is *defined* as: score = float64 inner product of the given float32 vectors, ordered by
score descending, ties broken by archive index ascending (stable). Every path here returns exactly
that ranking:

1. A fast candidate pass: blocked matmul in bf16 (~2x fp32 on CPUs with AVX512-BF16/AMX) or fp32;
   ``precision="auto"`` (the default) takes bf16 only where this CPU runs bf16 matmuls natively and
   fp32 elsewhere (on an AVX2-only CPU a bf16 matmul is 8-360x slower than fp32:
   :mod:`csmae.models.precision`); the k-th largest of the maxima of runs of 32 columns stands in
   for the k-th score (it is <= the k-th score, so the threshold below only gets more
   conservative) and only groups whose maximum passes the threshold are scanned
   (``selection="groups"``, 1.85x faster than the former top-4k list per row, ``selection="topk"``;
   same results).
2. A rigorous error bound on the candidate scores gives, per query, a threshold below which no item
   can belong to the exact top-k; every item above it is rescored in float64 and the final order is
   taken on (rescored score, index). No approximation survives: the result equals a full float64
   argsort (tests check this against brute force, ties included).

bf16 error bound (a = a_h + a_l with a_h = bf16(a); same for b; unit roundoff u = 2**-8 for bf16,
accumulation in fp32 with u32 = 2**-24)::

    |fl(a_h.b_h) - a.b| <= |a_l||b| + |a_h||b_l| + D*u32*|a_h||b_h| + u*|fl(a_h.b_h)|*(1+2u)

(Cauchy-Schwarz on the residual terms; the last term is the bf16 rounding of the output).

fp32 error bound (no input rounding, no output rounding; any summation order of the D products)::

    |fl(a.b) - a.b| <= gamma_D * sum_i |a_i b_i| <= D*u32/(1 - D*u32) * |a||b|

The fp32 pass runs its matmuls with ``torch.set_float32_matmul_precision("highest")`` (a process
that set "medium" would otherwise get bf16 arithmetic from oneDNN, outside this bound), and both
bounds are spot-checked against float64 on the first block.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from csmae.retrieval.normalize import l2_normalize  # noqa: F401  (also importable from here)

log = logging.getLogger(__name__)

_U_BF16 = 2.0**-8
_U_FP32 = 2.0**-24
#: extra absolute slack on every bound (covers float64 rescoring and fp32 threshold arithmetic).
_SLACK = 1e-6
#: default candidate selection of :func:`exact_topk` (``"groups"`` or ``"topk"``, same results).
CANDIDATE_SELECTION = "groups"
#: BLAS of the fp32 candidate matmul: ``"torch"`` (torch's: MKL in the x86 wheels), ``"numpy"``
#: (numpy's: OpenBLAS in its wheels) or ``"auto"``: numpy's OpenBLAS on x86 CPUs not made by Intel,
#: torch's elsewhere. On a 2-core AMD EPYC (Zen 2) MKL's sgemm ran at 0.66-0.70x of OpenBLAS's
#: (bench/README.md ``## Issue 22, AVX2``). Same results either way: the fp32 bound holds for any
#: summation order, and the first block is spot-checked.
CANDIDATE_BLAS = "auto"


def candidate_blas(precision: str, blas: str | None = None) -> str:
    """``"torch"`` or ``"numpy"``: which BLAS computes the candidate scores (bf16 is torch's only)."""
    blas = CANDIDATE_BLAS if blas is None else blas
    if blas not in ("auto", "torch", "numpy"):
        raise ValueError(f"blas must be 'auto', 'torch' or 'numpy', got {blas!r}")
    if precision != "fp32":
        return "torch"
    if blas != "auto":
        return blas
    from csmae.models.precision import cpu_vendor, is_x86

    not_intel = is_x86() and cpu_vendor() not in ("GenuineIntel", "")
    return "numpy" if not_intel and _numpy_has_openblas() else "torch"


def _numpy_has_openblas() -> bool:
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]  # type: ignore[func-returns-value,index]
        return "openblas" in str(deps["blas"]["name"]).lower()
    except (TypeError, KeyError, ValueError):
        return False


@dataclass
class TopKStats:
    """Where the time went (seconds) and how many candidates were rescored."""

    matmul_s: float = 0.0
    topk_s: float = 0.0
    rescore_s: float = 0.0
    candidates: int = 0
    queries: int = 0

    def add(self, other: TopKStats) -> None:
        for f in ("matmul_s", "topk_s", "rescore_s", "candidates", "queries"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


def _check_inputs(queries: np.ndarray, archive: np.ndarray, k: int, n_excluded: int) -> None:
    if queries.ndim != 2 or archive.ndim != 2:
        raise ValueError(f"queries and archive must be 2-D (N, D); got {queries.shape} and {archive.shape}")
    if archive.shape[0] == 0:
        raise ValueError("the archive is empty: nothing to search")
    if queries.shape[1] != archive.shape[1]:
        raise ValueError(
            f"dimension mismatch: queries have D={queries.shape[1]}, archive has D={archive.shape[1]}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > archive.shape[0] - n_excluded:
        raise ValueError(
            f"k={k} is larger than the archive ({archive.shape[0]} items"
            + (f", {n_excluded} excluded per query" if n_excluded else "")
            + "); ask for a smaller k"
        )


def rank_rows(scores: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (score descending, index ascending). Padded slots use score -inf, idx max."""
    o1 = np.argsort(idx, axis=1, kind="stable")
    s1 = np.take_along_axis(scores, o1, 1)
    i1 = np.take_along_axis(idx, o1, 1)
    o2 = np.argsort(-s1, axis=1, kind="stable")
    return np.take_along_axis(s1, o2, 1), np.take_along_axis(i1, o2, 1)


def _round_down(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype``, rounded towards -inf (so a threshold never drops a candidate)."""
    y = x.to(dtype)
    over = y.float() > x
    if bool(over.any()):
        y[over] = torch.nextafter(y[over], torch.full_like(y[over], -torch.inf))
    return y


def _rescore_chunks(
    q64: torch.Tensor, a32: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, chunk: int
) -> torch.Tensor:
    """float64 inner products of the (query row, archive col) pairs, ``chunk`` pairs at a time
    through small reused buffers (a gather into fresh memory costs ~10x more: page faults).

    The result for a pair does not depend on its position, the chunking or the thread: its float32
    x float32 products are exact in float64 and every row is summed by the same reduction.
    """
    n_pairs, d = rows.shape[0], a32.shape[1]
    out = torch.empty(n_pairs, dtype=torch.float64)
    chunk = max(1, min(chunk, n_pairs))
    g32 = torch.empty(chunk, d, dtype=torch.float32)
    g64 = torch.empty(chunk, d, dtype=torch.float64)
    qb = torch.empty(chunk, d, dtype=torch.float64)
    for s in range(0, n_pairs, chunk):
        n = min(chunk, n_pairs - s)
        torch.index_select(a32, 0, cols[s : s + n], out=g32[:n])
        g64[:n].copy_(g32[:n])
        torch.index_select(q64, 0, rows[s : s + n], out=qb[:n])
        g64[:n].mul_(qb[:n])
        torch.sum(g64[:n], -1, out=out[s : s + n])
    return out


def _candidates(
    approx: torch.Tensor, thr: torch.Tensor, top_vals: torch.Tensor, top_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, archive col) of every entry with approx >= thr (per row).

    Read from the rows' top-k2 lists (``top_vals``/``top_idx``, k2 >= k) where those hold all of
    them, which saves comparing and scanning the whole (B, N) block; rows whose k2-th value still
    passes the threshold may have more candidates and are scanned in full.
    """
    inside = top_vals >= thr[:, None]  # (B, k2)
    if top_vals.shape[1] < approx.shape[1]:
        full = inside[:, -1].clone()  # (B,) a copy: `inside` changes below
    else:
        full = torch.zeros_like(inside[:, -1])
    inside &= ~full[:, None]
    rows, pos = torch.nonzero(inside, as_tuple=True)
    cols = top_idx[rows, pos]
    wide = torch.nonzero(full).flatten()
    if len(wide):
        r_w, c_w = torch.nonzero(approx[wide] >= thr[wide, None], as_tuple=True)
        rows, cols = torch.cat([rows, wide[r_w]]), torch.cat([cols, c_w])
    return rows, cols


def _group_size(n: int, k: int) -> int:
    """Columns per group of the group-maxima pass: 32, fewer for small archives (>= 4k groups)."""
    return max(1, min(32, n // (4 * k)))


def _group_maxima(approx: torch.Tensor, g: int, buf: torch.Tensor | None) -> torch.Tensor:
    """(B, G) float32 maxima of ``approx`` (B, G*g) over each run of ``g`` columns.

    A bf16 block is converted to float32 in one pass into ``buf`` (reused: no fresh memory per
    block), then reduced: float32 reductions are several times faster than bf16 ones on CPU, and one
    large op beats many small ones on a busy machine (measured: row chunks were 2x slower than
    top-4k). An fp32 block (``buf`` None) is reduced in place.
    """
    b, n = approx.shape
    w = approx
    if buf is not None:
        w = buf[:b]
        w.copy_(approx)
    return w.view(b, n // g, g).amax(-1)


def _group_candidates(
    approx: torch.Tensor, g: int, gmax: torch.Tensor, thr: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of every entry with approx >= thr, visiting only the groups whose maximum passes."""
    b, n = approx.shape
    n_groups = n // g
    flat = torch.nonzero((gmax >= thr.float()[:, None]).view(-1)).flatten()  # row * G + group
    blk = torch.index_select(approx.view(b * n_groups, g), 0, flat)  # (P, g)
    pr, pj = torch.nonzero(blk >= thr[flat // n_groups, None], as_tuple=True)
    hit = flat[pr]
    return hit // n_groups, (hit % n_groups) * g + pj


#: fewest candidate pairs per worker of :func:`_select_block` (below this, one thread does all)
_MIN_PAIRS_PER_PART = 8192
#: rows are ranked in a padded (rows x widest row) table while it holds at most 4x the pairs plus this
_TABLE_EXTRA = 4096


def _select_block(
    rows_t: torch.Tensor,
    cols_t: torch.Tensor,
    nq: int,
    q64: torch.Tensor,
    a32: torch.Tensor,
    k: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Rescore the candidate (row, col) pairs in float64 and keep each row's exact top-k.

    The rows are split into contiguous ranges of about equal candidate counts, one per core, and
    each range is rescored and ranked on its own Python thread with single-threaded torch/numpy ops
    (they release the GIL): small memory-bound ops lose badly to intra-op thread synchronisation on
    a busy machine, and the numpy sorts are single-threaded anyway. A pair's score does not depend
    on its range, position or the thread count (:func:`_rescore_chunks`), so neither does the result.
    """
    rows, cols = rows_t.numpy(), cols_t.numpy()
    if rows.shape[0] and not _sorted_by_row_col(rows, cols, a32.shape[0]):
        o = np.lexsort((cols, rows))
        rows, cols = rows[o], cols[o]
    counts = np.bincount(rows, minlength=nq)
    if int(counts.min()) < k:  # cannot happen unless the error bound is violated
        raise RuntimeError("internal error: fewer candidates than k after rescoring")
    threads = torch.get_num_threads()
    parts = max(1, min(threads, rows.shape[0] // _MIN_PAIRS_PER_PART, nq))
    ends = np.cumsum(counts)
    # row r0 of each range: the first row whose candidates reach an equal share of the pairs
    cut = np.searchsorted(ends, np.linspace(0, rows.shape[0], parts + 1)[1:-1], side="right")
    bounds = np.unique(np.concatenate([[0], cut, [nq]]))

    def one(r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        p0 = int(ends[r0 - 1]) if r0 else 0
        p1 = int(ends[r1 - 1])
        return _rank_rows_of(q64, a32, rows[p0:p1], cols[p0:p1], counts[r0:r1], k)

    torch.set_num_threads(1)
    try:
        if len(bounds) == 2:
            s, i = one(0, nq)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(bounds) - 1) as pool:
                got = list(pool.map(lambda b: one(int(b[0]), int(b[1])), zip(bounds[:-1], bounds[1:])))
            s, i = np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])
    finally:
        torch.set_num_threads(threads)
    return s, i, int(rows.shape[0])


def _sorted_by_row_col(rows: np.ndarray, cols: np.ndarray, n_cols: int) -> bool:
    key = rows.astype(np.int64) * n_cols + cols
    return bool((key[1:] > key[:-1]).all())


def _rank_rows_of(
    q64: torch.Tensor, a32: torch.Tensor, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(scores (R, k) float64, cols (R, k) int64) of R consecutive rows whose candidate pairs
    ``rows``/``cols`` are sorted by (row, col) with ``counts`` per row; each row ordered by (score
    desc, col asc)."""
    by_col = np.argsort(cols, kind="stable")  # gather archive rows in memory order: ~4x faster
    exact = np.empty(rows.shape[0], dtype=np.float64)
    exact[by_col] = _rescore_chunks(q64, a32, torch.from_numpy(rows[by_col]),
                                    torch.from_numpy(cols[by_col]), 512).numpy()  # fmt: skip
    n_rows, widest = len(counts), int(counts.max())
    starts = np.cumsum(counts) - counts
    if n_rows * widest <= 4 * rows.shape[0] + _TABLE_EXTRA:  # a (rows, widest) table: one stable sort per row
        row_of = np.repeat(np.arange(n_rows), counts)
        pos = np.arange(rows.shape[0]) - starts[row_of]
        table = np.full((n_rows, widest), np.inf)
        table[row_of, pos] = -exact
        o = np.argsort(table, axis=1, kind="stable")[:, :k]  # ties keep the (ascending) col order
        if bool((o < counts[:, None]).all()):  # else a NaN score sorted after the padding
            take = starts[:, None] + o
            return exact[take], cols[take].astype(np.int64)
    o = np.lexsort((cols, -exact, rows))  # row asc, then score desc, then archive index asc
    take = (starts[:, None] + np.arange(k)[None, :]).reshape(-1)
    return exact[o][take].reshape(n_rows, k), cols[o][take].reshape(n_rows, k).astype(np.int64)


def _bound_holds(
    approx: torch.Tensor,
    q32: torch.Tensor,
    a32: torch.Tensor,
    ql_n: torch.Tensor,
    qh_n: torch.Tensor,
    bl_max: float,
    b_norm_max: float,
    u_out: float = _U_BF16,
) -> bool:
    """Spot-check the error model on a sample of the first block (guards against a BLAS that would
    not accumulate in fp32, or fp32 matmuls run in lower precision); the bounds are derived in the
    module docstring (``u_out`` = 0 for the fp32 pass: no output rounding)."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.randperm(approx.shape[0], generator=gen)[:32]
    cols = torch.randperm(approx.shape[1], generator=gen)[:512]
    exact = q32[rows].double() @ a32[cols].double().T
    got = approx[rows][:, cols].double()
    d = q32.shape[1]
    e_abs = (
        ql_n[rows] * b_norm_max + qh_n[rows] * bl_max + d * _U_FP32 * 1.01 * qh_n[rows] * b_norm_max * 1.01
    )
    bound = e_abs[:, None].double() + u_out * (1 + 2 * u_out) * got.abs() + _SLACK
    return bool(((got - exact).abs() <= bound).all())


def resolve_precision(precision: str) -> str:
    """``"auto"`` -> ``"bf16"`` where this CPU runs bf16 matmuls natively, else ``"fp32"``."""
    if precision == "auto":
        from csmae.models.precision import cpu_bf16

        return "bf16" if cpu_bf16()[0] else "fp32"
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    return precision


@contextlib.contextmanager
def _ieee_fp32_matmul() -> Iterator[None]:
    """fp32 matmuls in fp32 arithmetic while inside (see the fp32 error bound in the module docstring)."""
    old = torch.get_float32_matmul_precision()
    if old == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def exact_topk(
    queries: np.ndarray,
    archive: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
    precision: str = "auto",
    block_size: int = 1024,
    progress: Callable[[int], None] | None = None,
    stats: TopKStats | None = None,
    selection: str | None = None,
    blas: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (see module docstring for the ranking definition).

    Args:
        queries: (Q, D) float32 (L2-normalise first for cosine).
        archive: (N, D) float32.
        k: number of results per query (must be <= N minus the excluded items per query).
        exclude: optional (Q, m) int archive indices to leave out for each query (-1 = none).
        precision: candidate pass precision, ``"auto"`` (bf16 where this CPU runs bf16 matmuls
            natively, else fp32), ``"bf16"`` or ``"fp32"`` (same results, different speed).
        block_size: queries per block (memory ~ block_size * N * 2-4 bytes).
        progress: called with the number of queries finished in each block.
        stats: optional accumulator of timings.
        selection: how the candidate pass finds the k-th approximate score and the items above the
            threshold: ``"groups"`` (maxima of runs of 32 columns, then only the groups that pass)
            or ``"topk"`` (a top-4k list per row); default :data:`CANDIDATE_SELECTION`. Both give
            the same candidates' exact ranking (identical results), at different speed.
        blas: which BLAS computes fp32 candidate scores (default :data:`CANDIDATE_BLAS`; identical
            results).

    Returns:
        scores (Q, k) float64 and indices (Q, k) int64.
    """
    precision = resolve_precision(precision)
    with _ieee_fp32_matmul():
        return _exact_topk(queries, archive, k, exclude=exclude, precision=precision, block_size=block_size,
                           progress=progress, stats=stats, selection=selection,
                           blas=candidate_blas(precision, blas))


def _exact_topk(
    queries: np.ndarray,
    archive: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None,
    precision: str,
    block_size: int,
    progress: Callable[[int], None] | None,
    stats: TopKStats | None,
    selection: str | None,
    blas: str = "torch",
) -> tuple[np.ndarray, np.ndarray]:
    import time

    selection = CANDIDATE_SELECTION if selection is None else selection
    if selection not in ("groups", "topk"):
        raise ValueError(f"selection must be 'groups' or 'topk', got {selection!r}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    archive = np.ascontiguousarray(archive, dtype=np.float32)
    n_excl = 0
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64).reshape(len(queries), -1)
        n_excl = int((exclude >= 0).sum(1).max()) if exclude.size else 0
    _check_inputs(queries, archive, k, n_excl)
    st = stats if stats is not None else TopKStats()
    nq, d = queries.shape
    a32 = torch.from_numpy(archive)
    q32_all = torch.from_numpy(queries)
    a_norm = a32.norm(dim=1)
    if precision == "bf16":
        a_c = a32.to(torch.bfloat16)
        a_h = a_c.float()
        b_norm_max = float(a_norm.max())
        bh_max = float(a_h.norm(dim=1).max())
        bl_max = float((a32 - a_h).norm(dim=1).max())
        u_out = _U_BF16
    else:
        a_c = a32
        b_norm_max = bh_max = float(a_norm.max())
        bl_max = 0.0
        u_out = 0.0
    n_arch = a32.shape[0]
    g = _group_size(n_arch, k)
    pad = -n_arch % g if selection == "groups" else 0
    if pad:  # whole groups: zero rows here, -inf scores below
        a_c = torch.cat([a_c, a_c.new_zeros(pad, d)])
    a_t = a_c.T  # (D, N) view: BLAS handles the transpose
    a_np_t = a_c.numpy().T if blas == "numpy" else None  # the same memory, for numpy's BLAS
    # the score block, reused: a fresh (block x archive) allocation per block costs page faults
    scores = torch.empty(min(block_size, nq), n_arch + pad, dtype=a_c.dtype)
    conv = None  # float32 copy of a bf16 score block for the group-maxima pass (block x archive x 4 bytes)
    if selection == "groups" and precision == "bf16":
        conv = torch.empty(min(block_size, nq), n_arch + pad)
    out_s = np.empty((nq, k), dtype=np.float64)
    out_i = np.empty((nq, k), dtype=np.int64)
    for s in range(0, nq, block_size):
        e = min(nq, s + block_size)
        q32 = q32_all[s:e]
        t0 = time.perf_counter()
        if precision == "bf16":
            qc = q32.to(torch.bfloat16)
            qh = qc.float()
            qh_n = qh.norm(dim=1)
            ql_n = (q32 - qh).norm(dim=1)
        else:
            qc = q32
            qh_n = q32.norm(dim=1)
            ql_n = torch.zeros_like(qh_n)
        approx = scores[: e - s]  # (B, N + pad)
        if a_np_t is not None:
            np.matmul(qc.numpy(), a_np_t, out=approx.numpy())
        else:
            torch.matmul(qc, a_t, out=approx)
        if pad:
            approx[:, n_arch:] = -torch.inf
        if s == 0 and not _bound_holds(approx[:, :n_arch], q32, a32, ql_n, qh_n, bl_max, b_norm_max, u_out):
            if precision == "fp32":
                raise RuntimeError(
                    "the fp32 matmul of this machine is less accurate than IEEE fp32 arithmetic allows "
                    "(a BLAS computing in lower precision): exact search cannot bound its error"
                )
            log.warning("bf16 matmul on this machine is less accurate than assumed: using fp32 candidates")
            return _exact_topk(
                queries,
                archive,
                k,
                exclude=exclude,
                precision="fp32",
                block_size=block_size,
                progress=progress,
                stats=stats,
                selection=selection,
                blas=candidate_blas("fp32"),
            )
        if exclude is not None:
            ex = torch.from_numpy(exclude[s:e])
            r, c = torch.nonzero(ex >= 0, as_tuple=True)
            approx[r, ex[r, c]] = -torch.inf
        t1 = time.perf_counter()
        gmax = None
        if selection == "groups":
            # k-th largest group maximum <= k-th largest score: k distinct items reach it, so the
            # bound below stays a valid lower bound of the k-th exact score
            gmax = _group_maxima(approx, g, conv)
            vk = torch.topk(gmax, k, dim=1, sorted=False).values.amin(1)
            if not bool(torch.isfinite(vk).all()):  # too few finite groups (many excluded, NaN)
                gmax = None
        if gmax is None:
            # a longer top list than k: it usually holds every candidate (see _candidates)
            k2 = min(n_arch, max(k, 4 * k))
            top_vals, top_idx = torch.topk(approx[:, :n_arch], k2, dim=1, sorted=True)  # (B, k2)
            vk = top_vals[:, k - 1].float()  # (B,)
        # per-row error bound e_i (absolute part) and relative output-rounding part
        e_abs = ql_n * b_norm_max + qh_n * bl_max + d * _U_FP32 * 1.01 * qh_n * bh_max + _SLACK
        rel = u_out * (1 + 2 * u_out)
        # lower bound of the k-th exact score, then threshold on approx: approx + err(approx) >= lower
        lower = vk - e_abs - rel * vk.abs()
        # smallest approx whose upper bound approx + e_abs + rel*|approx| reaches `lower`
        thr = torch.minimum((lower - e_abs) / (1 + rel), (lower - e_abs) / (1 - rel)) - _SLACK
        thr_c = _round_down(thr, approx.dtype)
        t2 = time.perf_counter()
        if gmax is not None:
            rows, cols = _group_candidates(approx, g, gmax, thr_c)
        else:
            rows, cols = _candidates(approx[:, :n_arch], thr_c, top_vals, top_idx)
        sc, ix, ncand = _select_block(rows, cols, e - s, q32.to(torch.float64), a32, k)
        out_s[s:e], out_i[s:e] = sc, ix
        t3 = time.perf_counter()
        st.add(TopKStats(t1 - t0, t2 - t1, t3 - t2, ncand, e - s))
        if progress is not None:
            progress(e - s)
    return out_s, out_i


def merge_topk(
    parts: list[tuple[np.ndarray, np.ndarray]], offsets: list[int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-archive top-k lists into the top-k over the concatenated archive.

    Args:
        parts: (scores (Q, k_i), indices (Q, k_i)) per sub-archive, each exact and ranked.
        offsets: global index of each sub-archive's first item in the concatenation.
        k: results to keep (<= sum of k_i).

    Returns:
        The same (scores, global indices) as :func:`exact_topk` on the concatenated archive.
    """
    if not parts:
        raise ValueError("nothing to merge")
    if k > sum(p[0].shape[1] for p in parts):
        raise ValueError(f"k={k} is larger than the merged candidate lists")
    scores = np.concatenate([p[0] for p in parts], axis=1)
    idx = np.concatenate([p[1] + off for p, off in zip(parts, offsets)], axis=1)
    s, i = rank_rows(scores, idx)
    return s[:, :k], i[:, :k]
