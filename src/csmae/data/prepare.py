"""``csmae prepare``: convert any source into a prepared store, atomically and resumably.

The work is split into chunks of ``chunk_size`` pairs. Everything is written into ``<out>.partial/``:
the record files are allocated up front (sparse) and every pair is written at its own row, so
chunks are independent; a chunk is *committed* when its rows are flushed and its journal file
``journal/chunk-NNNNN.json`` (pairs written, patches skipped) has been renamed into place. A re-run
with the same sources and options finds the committed chunks and does only the others; at the end
the table, ``skipped.csv`` and the manifest are written and ``<out>.partial`` is renamed to ``<out>``.
Rows of skipped patches stay zero (holes in sparse files) and are not in the table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csmae.atomic import (
    PARTIAL_MARKER,
    check_partial,
    check_replaceable,
    claim_partial,
    clear_partial,
    replace_folder,
)
from csmae.data.base import DataError, PairedDataset, check_band
from csmae.data.store import STORE_KIND, ArrayGroup, plan_groups
from csmae.data.store_write import (
    open_records,
    pair_entry,
    records_from_native,
    records_from_sample,
    write_manifest,
    write_skipped,
    write_table,
)

log = logging.getLogger(__name__)

ON_ERROR = ("skip", "stop")
#: test hook: exit the process (os._exit(17)) right after committing this many chunks in one run
EXIT_AFTER_ENV = "CSMAE_PREPARE_EXIT_AFTER_CHUNKS"
PLAN = "plan.json"
JOURNAL = "journal"


@dataclass
class PrepareResult:
    """What :func:`prepare` did."""

    path: Path
    pairs: int
    skipped: int
    chunks: int
    chunks_done_now: int
    chunks_resumed: int


def _open_source(sources: Sequence[str], opts: dict[str, Any]) -> PairedDataset:
    from csmae.data.open import open_dataset

    return open_dataset(*sources, **opts)


def _skip_entry(pid: str, err: Exception) -> dict[str, Any]:
    path = getattr(err, "path", None)
    reason = getattr(err, "reason", None) or str(err)
    return {"patch": getattr(err, "patch", None) or pid, "file": path or "", "reason": reason}


def _read_native(ds: PairedDataset, i: int, groups: Sequence[ArrayGroup], cache: dict[str, Any]
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(records per group, sample without images) for pair ``i``; DataError for bad pixels.

    Record readers (``read_arrays``) give native bands directly; any other dataset gives upsampled
    samples, inverted exactly by :func:`records_from_sample`.
    """
    pid = ds.ids[i]
    read_arrays = getattr(ds, "read_arrays", None)
    if "labels" not in cache:  # once per process: (N, 19) labels and splits known without pixels
        get_labels = getattr(ds, "labels_array", None)
        cache["labels"] = get_labels() if get_labels is not None else None
        cache["splits"] = ds.splits()
    labels_array = cache["labels"]
    if read_arrays is not None and labels_array is not None and hasattr(ds, "metadata"):
        raw = read_arrays(i)
        path = raw.get("path", ds.source)
        bands: dict[str, dict[str, np.ndarray]] = {}
        for name, sensor in ds.sensors.items():
            got = raw[name]
            for b in sensor.bands:
                if b not in got:
                    raise DataError(f"band {b} is missing (has {sorted(got)})", patch=pid, path=path)
                check_band(got[b], band=b, expected_side=sensor.native_side(b), patch=pid, path=path)
            bands[name] = got
        sample = {"id": pid, "labels": labels_array[i], "split": cache["splits"][i], **ds.metadata(i)}
        return records_from_native(bands, groups), sample
    sample = ds[i]
    recs = records_from_sample(sample, groups, ds.sensors)
    return recs, {k: v for k, v in sample.items() if k not in ds.sensors}


# --- one chunk (in this process or in a worker) ------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(sources: Sequence[str], opts: dict[str, Any], tmp: str, groups: list[dict[str, Any]],
                 rows: int) -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; no nested thread pools
    _WORKER["ds"] = _open_source(sources, opts)
    g = [ArrayGroup.from_dict(d) for d in groups]
    _WORKER["groups"] = g
    _WORKER["mm"] = open_records(Path(tmp), g, rows, create=False)


def _do_chunk(k: int, start: int, stop: int, stop_on_error: bool) -> tuple[int, dict[str, Any]]:
    ds, groups, mm = _WORKER["ds"], _WORKER["groups"], _WORKER["mm"]
    entries, skipped = [], []
    for i in range(start, stop):
        try:
            recs, sample = _read_native(ds, i, groups, _WORKER.setdefault("cache", {}))
            entry = pair_entry(sample, i, list(ds.sensors))
        except DataError as err:
            if stop_on_error:
                raise
            skipped.append(_skip_entry(ds.ids[i], err))
            continue
        for name, rec in recs.items():
            mm[name][i] = rec
        entries.append(entry)
    for a in mm.values():
        a.flush()
    return k, {"chunk": k, "start": start, "stop": stop, "entries": entries, "skipped": skipped,
               "digests": {name: _rows_digest(a, start, stop) for name, a in mm.items()}}


def _rows_digest(a: np.ndarray, start: int, stop: int) -> str:
    """SHA-256 of records ``start:stop`` of a record file (checked when a prepare resumes)."""
    return hashlib.sha256(np.ascontiguousarray(a[start:stop]).view(np.uint8).reshape(-1).data).hexdigest()


def _verify_committed(tmp: Path, groups: Sequence[ArrayGroup], n: int, done: set[int]) -> set[int]:
    """Committed chunks whose records still hash as when committed; the others are redone."""
    from csmae.data.store_check import npy_layout

    mm = {}
    for g in groups:
        path = tmp / g.file
        shape, _, offset = npy_layout(path) if path.exists() else ((), None, 0)
        need = offset + n * int(np.prod(g.record_shape())) * np.dtype(g.dtype).itemsize
        size = path.stat().st_size if path.exists() else 0
        if shape != (n, *g.record_shape()) or size != need:
            raise DataError(f"record file of the unfinished prepare is damaged (shape {shape}, "
                            f"{size} bytes, expected {need}); delete {tmp} to start over", path=str(path))
        mm[g.name] = np.load(path, mmap_mode="r")
    ok = set()
    legacy = 0
    for k in sorted(done):
        f = tmp / JOURNAL / f"chunk-{k:05d}.json"
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            rec = None
        digests = rec.get("digests") if isinstance(rec, dict) else None
        if rec is None:
            log.warning("%s is damaged; redoing chunk %d", f, k)
        elif digests is None:
            legacy += 1
            ok.add(k)
        elif all(_rows_digest(mm[name], rec["start"], rec["stop"]) == d for name, d in digests.items()):
            ok.add(k)
        else:
            log.warning("%s: records of chunk %d (pairs %d-%d) changed since they were committed; "
                        "redoing the chunk", tmp, k, rec["start"], rec["stop"] - 1)
        if k not in ok:
            f.unlink(missing_ok=True)
    if legacy:
        log.warning("%s: %d committed chunk(s) have no checksums (an older csmae); resumed unverified",
                    tmp, legacy)
    return ok


def _commit(journal: Path, k: int, record: dict[str, Any]) -> None:
    tmp = journal / f".chunk-{k:05d}.json.tmp"
    tmp.write_text(json.dumps(record))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, journal / f"chunk-{k:05d}.json")


def _plan_key(ids: Sequence[str], info: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode())
    for pid in ids:
        h.update(pid.encode() + b"\n")
    return h.hexdigest()


def prepare(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    subset: str | os.PathLike[str] | Sequence[str] | None = None,
    workers: int = 1,
    on_error: str = "skip",
    sensors: Sequence[str] = ("s1", "s2"),
    s2_bands: Any = None,
    split: str | Sequence[str] | None = None,
    layout: str = "float32",
    chunk_size: int = 256,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareResult:
    """Convert ``sources`` (anything :func:`csmae.data.open_dataset` reads) into a store at ``out``.

    Args:
        sources: source path(s). subset: names file or ids to keep. split: keep only these splits.
        workers: processes reading pairs (1 = in this process).
        on_error: ``"skip"``: patches raising DataError are left out and listed in skipped.csv (as
            are the patches the reader dropped at open time); ``"stop"``: the first error is raised
            (committed chunks are kept, a re-run resumes).
        sensors, s2_bands: what to store. layout: ``"float32"`` (default, fastest reads) or
            ``"native"`` (2.5x fewer bytes, upsampled when read); see :mod:`csmae.data.store`.
        chunk_size: pairs per committed chunk. overwrite: replace an existing store at ``out``.
        progress: called with (pairs done, total) after every chunk.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if chunk_size < 1 or workers < 1:
        raise ValueError("chunk_size and workers must be >= 1")
    srcs = [str(sources)] if isinstance(sources, (str, os.PathLike)) else [str(s) for s in sources]
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite to replace it)")
    if overwrite:
        check_replaceable(out, STORE_KIND)  # before the work: only a store is replaced
    ids: Any = str(subset) if isinstance(subset, (str, os.PathLike)) else subset
    opts: dict[str, Any] = {"sensors": tuple(sensors), "s2_bands": s2_bands, "ids": ids, "split": split,
                            "on_error": "skip" if on_error == "skip" else "raise"}
    ds = _open_source(srcs, opts)
    n = len(ds)
    open_skips = [{"patch": pid, "file": "", "reason": why} for pid, why in getattr(ds, "problems", [])]
    if n == 0:
        raise DataError("no pairs to prepare (empty source, or every patch was skipped)",
                        path=", ".join(srcs))
    groups = plan_groups(ds.sensors, layout)
    info = {"sources": [os.path.abspath(s) for s in srcs], "sensors": {k: s.to_dict() for k, s in
            ds.sensors.items()}, "layout": layout, "chunk_size": chunk_size, "on_error": on_error}
    key = _plan_key(ds.ids, info)
    tmp = out.with_name(out.name + ".partial")
    lock = lock_partial(tmp, "prepare")
    try:
        resumed = reset_partial(tmp, key, "prepare", log)
        return _run(ds, tmp, out, key=key, info=info, resumed=resumed, groups=groups, n=n, srcs=srcs,
                    opts=opts, open_skips=open_skips, chunk_size=chunk_size, workers=workers,
                    on_error=on_error, layout=layout, overwrite=overwrite, progress=progress)
    finally:
        lock.close()


def _legacy_partial(what: str) -> Callable[[Path], bool]:
    """Recognise an unfinished ``what`` of a csmae from before partial markers (plan + journal)."""
    field = "rows" if what == "tile" else "pairs"

    def recognise(tmp: Path) -> bool:
        plan, journal = tmp / PLAN, tmp / JOURNAL
        if plan.is_symlink() or not plan.is_file() or journal.is_symlink() or not journal.is_dir():
            return False
        try:
            old = json.loads(plan.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(old, dict) and "key" in old and field in old

    return recognise


def lock_partial(tmp: Path, what: str) -> Any:
    """Create or take over the unfinished folder ``tmp`` of ``what`` (prepare, tile), locked.

    Two runs must not write one store; a symlink or a folder that is not an unfinished csmae
    ``what`` is refused (FileExistsError naming it) and nothing in it is touched.
    """
    return claim_partial(tmp, what, legacy=_legacy_partial(what))


def refuse_foreign_partial(tmp: Path, what: str) -> None:
    """Raise (naming it) when ``tmp`` exists and is not an unfinished csmae ``what``; reads nothing
    inside a folder that is not ours. For checks that run before :func:`lock_partial`."""
    check_partial(tmp, what, legacy=_legacy_partial(what))


def reset_partial(tmp: Path, key: str, what: str, logger: logging.Logger) -> bool:
    """True if the locked unfinished folder ``tmp`` holds the run planned as ``key`` (resume it).

    Otherwise what it holds (but its lock and marker) is removed, with a warning on ``logger``
    naming the ``what`` left there, and an empty journal is made. Shared by prepare and tile.
    """
    try:
        old = json.loads((tmp / PLAN).read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        old = None
    if old == key and (tmp / JOURNAL).is_dir() and not (tmp / JOURNAL).is_symlink():
        return True
    if any(p.name not in (".lock", PARTIAL_MARKER) for p in tmp.iterdir()):
        logger.warning("%s holds an unfinished %s of other inputs; starting over", tmp, what)
    clear_partial(tmp)
    (tmp / JOURNAL).mkdir()
    return False


def _run(ds: PairedDataset, tmp: Path, out: Path, *, key: str, info: dict[str, Any], resumed: bool,
         groups: list[ArrayGroup], n: int, srcs: list[str], opts: dict[str, Any],
         open_skips: list[dict[str, Any]], chunk_size: int, workers: int, on_error: str, layout: str,
         overwrite: bool, progress: Callable[[int, int], None] | None) -> PrepareResult:
    journal = tmp / JOURNAL
    if not resumed:
        open_records(tmp, groups, n, create=True)
        (tmp / PLAN).write_text(json.dumps({"key": key, **info, "pairs": n}, indent=2))
    chunks = [(k, s, min(s + chunk_size, n)) for k, s in enumerate(range(0, n, chunk_size))]
    done = {int(p.stem.split("-")[1]) for p in journal.glob("chunk-*.json")}
    if done:  # integrity: re-hash the committed records before trusting them
        done = _verify_committed(tmp, groups, n, done)
    todo = [c for c in chunks if c[0] not in done]
    if done:
        log.info("resuming %s: %d of %d chunks already committed", tmp, len(done), len(chunks))
    exit_after = int(os.environ.get(EXIT_AFTER_ENV, "0") or 0)
    pairs_done = sum(c[2] - c[1] for c in chunks if c[0] in done)
    if progress:
        progress(pairs_done, n)
    committed_now = 0
    init_args = (srcs, opts, str(tmp), [g.to_dict() for g in groups], n)

    def _finish_one(k: int, rec: dict[str, Any], stop: int, start: int) -> None:
        nonlocal committed_now, pairs_done
        _commit(journal, k, rec)
        committed_now += 1
        pairs_done += stop - start
        if progress:
            progress(pairs_done, n)
        if exit_after and committed_now >= exit_after:
            os._exit(17)

    stop_on_error = on_error == "stop"
    if workers == 1 or len(todo) <= 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # per-pair upsampling is tiny: threads only add overhead (10x under load)
        _WORKER.update(ds=ds, groups=groups, mm=open_records(tmp, groups, n, create=False))
        try:
            for k, start, stop in todo:
                _, rec = _do_chunk(k, start, stop, stop_on_error)
                _finish_one(k, rec, stop, start)
        finally:
            _WORKER.clear()
            torch.set_num_threads(threads)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=init_args) as pool:
            futs = {pool.submit(_do_chunk, k, start, stop, stop_on_error): (k, start, stop)
                    for k, start, stop in todo}
            from concurrent.futures import as_completed

            for fut in as_completed(futs):
                k, start, stop = futs[fut]
                _, rec = fut.result()
                _finish_one(k, rec, stop, start)
    return _finalize(tmp, out, chunks=len(chunks), groups=groups, ds=ds, rows=n, open_skips=open_skips,
                     layout=layout, srcs=srcs, info=info, done_now=committed_now, resumed=len(done),
                     overwrite=overwrite)


def _finalize(tmp: Path, out: Path, *, chunks: int, groups: list[ArrayGroup], ds: PairedDataset, rows: int,
              open_skips: list[dict[str, Any]], layout: str, srcs: list[str], info: dict[str, Any],
              done_now: int, resumed: int, overwrite: bool) -> PrepareResult:
    journal = tmp / JOURNAL
    entries: list[dict[str, Any]] = []
    skipped = list(open_skips)
    for k in range(chunks):
        rec = json.loads((journal / f"chunk-{k:05d}.json").read_text())
        entries.extend(rec["entries"])
        skipped.extend(rec["skipped"])
    if not entries:
        raise DataError(f"every one of the {rows} pairs was skipped; see the reasons in {tmp}/journal",
                        path=", ".join(srcs))
    write_table(tmp, entries)
    write_skipped(tmp, skipped)
    write_manifest(tmp, sensors=ds.sensors, groups=groups, layout=layout, rows=rows, entries=entries,
                   skipped=len(skipped), source={"paths": info["sources"], "kind": getattr(ds, "kind", "")},
                   producer="csmae prepare", extra={"chunk_size": info["chunk_size"]})
    shutil.rmtree(journal)
    (tmp / PLAN).unlink()
    (tmp / ".lock").unlink(missing_ok=True)  # the lock stays held on the open file until the run ends
    (tmp / PARTIAL_MARKER).unlink(missing_ok=True)
    if overwrite:
        replace_folder(tmp, out, kind=STORE_KIND)
    else:
        os.replace(tmp, out)
    log.info("prepared %s: %d pairs, %d skipped", out, len(entries), len(skipped))
    return PrepareResult(path=out, pairs=len(entries), skipped=len(skipped), chunks=chunks,
                         chunks_done_now=done_now, chunks_resumed=resumed)
