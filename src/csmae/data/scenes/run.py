"""``csmae tile``: scenes -> a prepared store of 120x120 patches, atomic and resumable.

Work happens in ``<out>.partial/`` (as in ``csmae prepare``): record files are allocated up front
(sparse, one row per grid patch; skipped patches stay holes), each strip (one row of patches) is
a chunk: its records are written at their rows and synced, then ``journal/chunk-NNNNN.json``
(table entries, skips, timings) is renamed into place. A re-run with the same inputs and options
redoes only the strips without a journal; the table, ``skipped.csv`` and the manifest are written
last and the folder is renamed to ``<out>``. Strips run in ``workers`` threads, each walking a
contiguous share of the strips (rasterio, GDAL, torch and ``os.pwrite`` release the GIL).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from csmae.atomic import PARTIAL_MARKER, check_replaceable, replace_folder
from csmae.data.base import DataError
from csmae.data.prepare import JOURNAL, PLAN, lock_partial, refuse_foreign_partial, reset_partial
from csmae.data.scenes.bounds import check_output_size, check_scene_sizes
from csmae.data.scenes.cut import cut_strip
from csmae.data.scenes.job import SceneJob
from csmae.data.scenes.plan import Plan, plan_tiling
from csmae.data.scenes.rasters import Datasets, local_file
from csmae.data.scenes.readers import SCENE_READERS, by_priority, reader_of
from csmae.data.store import STORE_KIND, ArrayGroup
from csmae.data.store_write import write_manifest, write_skipped, write_table
from csmae.sensors import get_sensor

log = logging.getLogger(__name__)

#: test hook: exit the process (os._exit(17)) right after committing this many strips in one run
EXIT_AFTER_ENV = "CSMAE_TILE_EXIT_AFTER_CHUNKS"
#: strips whose records are synced to disk together before their journal entries are committed
SYNC_EVERY = 8


@dataclass
class TileResult:
    """What :func:`tile_scenes` did."""

    path: Path
    patches: int
    skipped: int
    chunks: int
    chunks_resumed: int
    seconds: dict[str, float]
    gaps: list[dict[str, Any]]
    messages: list[str] = field(default_factory=list)  # for the user (e.g. expected terrain error)
    overlap_dropped: int = 0  # of ``skipped``: the same ground as a kept patch of an overlapping scene


class RecordFiles:
    """The ``.npy`` record files of a store, written row by row with ``os.pwrite`` (no mapping:
    written pages do not count against this process's resident memory)."""

    def __init__(self, folder: Path, groups: Sequence[ArrayGroup], rows: int, *, create: bool):
        self.fds: dict[str, int] = {}
        self.offset: dict[str, int] = {}
        self.nbytes: dict[str, int] = {}
        for g in groups:
            path = folder / g.file
            shape = (rows, *g.record_shape())
            if create or not path.exists():
                mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(g.dtype), shape=shape)
                del mm  # sparse file of the right size with its .npy header
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                got, _, dtype = read_header(f)
                if got != shape or dtype != np.dtype(g.dtype):
                    raise DataError(f"record file has shape {got} {dtype}, expected {shape} {g.dtype}",
                                    path=str(path))
                self.offset[g.name] = f.tell()
            self.fds[g.name] = os.open(path, os.O_WRONLY)
            self.nbytes[g.name] = int(np.prod(g.record_shape())) * np.dtype(g.dtype).itemsize

    def write(self, name: str, rows: Sequence[int], records: np.ndarray) -> None:
        """Write ``records[i]`` at row ``rows[i]`` (consecutive rows in one call)."""
        fd, size, off = self.fds[name], self.nbytes[name], self.offset[name]
        i = 0
        while i < len(rows):
            j = i + 1
            while j < len(rows) and rows[j] == rows[j - 1] + 1:
                j += 1
            data = np.ascontiguousarray(records[i:j]).data
            done = 0
            while done < data.nbytes:
                done += os.pwrite(fd, data[done:], off + rows[i] * size + done)
            i = j

    def sync(self) -> None:
        for fd in self.fds.values():
            os.fdatasync(fd)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _plan_key(plan: Plan, options: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    for f in plan.inputs:
        local = local_file(f)
        st = os.stat(local) if local is not None else None
        h.update(f"{os.path.abspath(f)}|{st.st_size if st else ''}|{st.st_mtime_ns if st else ''}\n".encode())
    for j in plan.jobs:
        h.update(json.dumps({"name": j.name, "grid": j.grid.to_dict(), "base": j.row_base}).encode())
    if len(plan.jobs) > 1:  # journals of several scenes carry valid counts for the overlap choice
        h.update(b"overlap kept once: 1\n")
    return h.hexdigest()


def tile_scenes(
    out: str | os.PathLike[str], *, s2: Sequence[str] = (), s1: Sequence[str] = (),
    stac: Sequence[str] = (), stride: int = 120, min_valid: float = 0.9, scl: Sequence[int] | None = None,
    s1_units: str | None = None, max_days: float | None = None, layout: str = "float32",
    boa_offset: float | None = None, workers: int = 1, overwrite: bool = False,
    product_checksums: bool = True, yes: bool = False, progress: Callable[[int, int], None] | None = None,
    paths: Mapping[str, Sequence[str]] | None = None,
    s1_calibration: str = "sigma0", s1_geocoding: str = "tps", dem: str | None = None,
    aoi: Any | None = None,
) -> TileResult:
    """Cut georeferenced S1/S2 scenes into a prepared store of paired 120x120 patches.

    Args:
        out: store folder to write (``open_dataset(out)`` reads it).
        s2, s1, stac: input paths (see :mod:`csmae.data.scenes.s2`, ``.s1``, ``.stac``).
        stride: pixels between patch origins on the 10 m grid (120: no overlap).
        min_valid: least fraction of valid pixels per patch and sensor (nodata, zeros, S1 border
            and SCL-flagged pixels are invalid); other patches are listed in ``skipped.csv``.
        scl: SCL classes that make a pixel invalid (``()`` for the default cloud/shadow/snow set),
            None to ignore SCL.
        s1_units: ``"linear"`` or ``"db"``; None: as the file says, else decided from the values.
        max_days: largest S1/S2 acquisition gap allowed (error beyond; the gap is reported always).
        layout: store layout, ``"float32"`` (20 m bands upsampled now) or ``"native"``.
        boa_offset: DN offset of every S2 band when the inputs carry no metadata (e.g. -1000).
        workers: strips cut at once (threads). overwrite: replace an existing store.
        product_checksums: check the files of Sentinel products against their own checksums
            (``manifest.safe``); the result is recorded in the store manifest either way.
        yes: go ahead past the size bounds of :mod:`csmae.data.scenes.bounds` (never past the disk).
        progress: called with (strips done, strips) after each strip.
        paths: input paths of any sensor with a scene reader (:mod:`csmae.data.scenes.readers`),
            added to those of ``s2`` and ``s1``.
        s1_calibration: raw GRD products: ``sigma0`` (default), ``gamma0`` or ``beta0``.
        s1_geocoding: raw GRD without a DEM: ``tps`` (thin-plate spline, default) or ``poly3``.
        dem: a DEM GeoTIFF/COG: terrain-correct raw GRD products (sarsen; ``csmae[sar]``).
        aoi: a lon/lat shapely (multi)polygon (:mod:`csmae.data.scenes.aoi`): cut only the patches
            that intersect it.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite to replace it)")
    if overwrite:
        check_replaceable(out, STORE_KIND)  # before the work: only a store is replaced
    tmp = out.with_name(out.name + ".partial")
    refuse_foreign_partial(tmp, "tile")  # before planning and before the size check looks inside it
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if dem is not None and not s1 and not stac and not (paths or {}).get("s1"):
        raise ValueError("--dem terrain-corrects raw S1 GRD products (.SAFE / .zip / STAC GRD items); "
                         "none given")
    inputs: dict[str, list[str]] = {"s2": list(s2), "s1": list(s1)}  # the CLI's --s2 / --s1
    for sensor, more in (paths or {}).items():
        inputs[sensor] = [*inputs.get(sensor, []), *more]
    plan = plan_tiling(paths=inputs, stac=stac, stride=stride, min_valid=min_valid, scl=scl,
                       max_days=max_days, layout=layout,
                       options={"s1_units": s1_units, "boa_offset": boa_offset,
                                "product_checksums": product_checksums, "s1_calibration": s1_calibration,
                                "s1_geocoding": s1_geocoding, "dem": dem},
                       aoi=aoi)
    return tile_plan(plan, out, stride=stride, min_valid=min_valid, layout=layout, s1_units=s1_units,
                     boa_offset=boa_offset, workers=workers, overwrite=overwrite, progress=progress,
                     sources=[p for s in by_priority(inputs) for p in inputs[s]] + list(stac),
                     aoi=aoi, yes=yes)


def tile_plan(
    plan: Plan, out: str | os.PathLike[str], *, stride: int, min_valid: float, layout: str,
    s1_units: str | None, boa_offset: float | None, sources: Sequence[str], workers: int = 1,
    overwrite: bool = False, progress: Callable[[int, int], None] | None = None, aoi: Any | None = None,
    yes: bool = False,
) -> TileResult:
    """Cut the scenes of a :func:`~csmae.data.scenes.plan.plan_tiling` plan (or a part of its jobs)
    into the store ``out``; the options are those the plan was made with (see :func:`tile_scenes`)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite to replace it)")
    if overwrite:
        check_replaceable(out, STORE_KIND)
    tmp = out.with_name(out.name + ".partial")
    refuse_foreign_partial(tmp, "tile")
    options = {"stride": stride, "min_valid": min_valid, "scl": plan.jobs[0].scl_codes, "layout": layout,
               "s1_units": s1_units, "boa_offset": boa_offset, "sensors": list(plan.sensors)}
    options.update(plan.options_used)  # e.g. raw GRD processing options: part of the resume key
    if aoi is not None:
        options["aoi"] = aoi.wkt
    check_scene_sizes(plan, yes=yes)  # before anything is written
    check_output_size(plan, out, stride=stride, yes=yes)
    key = _plan_key(plan, options)
    lock = lock_partial(tmp, "tile")
    try:
        resumed = reset_partial(tmp, key, "tiling", log)
        return _run(plan, tmp, out, key=key, options=options, resumed=resumed, workers=workers,
                    overwrite=overwrite, progress=progress, sources=list(sources))
    finally:
        lock.close()


def _run(plan: Plan, tmp: Path, out: Path, *, key: str, options: dict[str, Any], resumed: bool,
         workers: int, overwrite: bool, progress: Callable[[int, int], None] | None,
         sources: list[str]) -> TileResult:
    journal = tmp / JOURNAL
    rows = plan.patches
    files = RecordFiles(tmp, plan.groups, rows, create=not resumed)
    if not resumed:
        (tmp / PLAN).write_text(json.dumps({"key": key, **options, "rows": rows}, indent=2))
    chunks: list[tuple[int, SceneJob, int]] = []
    for job in plan.jobs:
        chunks.extend((len(chunks), job, r) for r in range(job.grid.rows))
    done = {int(p.stem.split("-")[1]) for p in journal.glob("chunk-*.json")}
    if done:  # integrity: re-hash the committed records before trusting them
        done = _verify_committed(tmp, plan.groups, journal, done)
    todo = [c for c in chunks if c[0] not in done]
    if done:
        log.info("resuming %s: %d of %d strips already committed", tmp, len(done), len(chunks))
    exit_after = int(os.environ.get(EXIT_AFTER_ENV, "0") or 0)
    dss = Datasets()
    n_done, committed = len(done), 0
    if progress:
        progress(n_done, len(chunks))

    def one(c: tuple[int, SceneJob, int]) -> tuple[int, dict[str, Any]]:
        k, job, r = c
        strip = cut_strip(job, r, dss)
        t0 = time.perf_counter()
        for name, rec in strip.records.items():
            files.write(name, strip.rows, rec)
        strip.seconds["write"] = time.perf_counter() - t0
        digests = {name: _digest(rec) for name, rec in strip.records.items()}  # checked on resume
        return k, {"chunk": k, "entries": strip.entries, "skipped": strip.skipped, "seconds": strip.seconds,
                   "rows": list(strip.rows), "digests": digests, "valid": strip.valid}

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-strip upsampling is small; strips run in parallel instead
    pending: list[tuple[int, dict[str, Any]]] = []
    last_sync = time.monotonic()

    def flush() -> None:
        nonlocal n_done, committed, last_sync
        files.sync()  # records reach the disk before the journal says they are there
        for k, rec in pending:
            _commit(journal, k, rec)
            n_done += 1
            committed += 1
            if progress:
                progress(n_done, len(chunks))
            if exit_after and committed >= exit_after:
                os._exit(17)
        pending.clear()
        last_sync = time.monotonic()

    try:
        for k, rec in _parallel(one, todo, workers):
            pending.append((k, rec))
            if len(pending) >= SYNC_EVERY or time.monotonic() - last_sync > 5.0 or exit_after:
                flush()
        flush()
    finally:
        torch.set_num_threads(threads)
        files.close()
    return _finalize(plan, tmp, out, chunks=len(chunks), resumed=len(done), options=options,
                     overwrite=overwrite, sources=sources)


def _digest(records: np.ndarray) -> str:
    """SHA-256 of a strip's records of one group, in row order."""
    return hashlib.sha256(np.ascontiguousarray(records).view(np.uint8).reshape(-1).data).hexdigest()


def _verify_committed(tmp: Path, groups: Sequence[ArrayGroup], journal: Path, done: set[int]) -> set[int]:
    """Committed strips whose records still hash as when committed; the others are redone."""
    arrays = {g.name: np.load(tmp / g.file, mmap_mode="r") for g in groups}
    ok: set[int] = set()
    legacy = 0
    for k in sorted(done):
        f = journal / f"chunk-{k:05d}.json"
        try:
            rec = json.loads(f.read_text())
            rows, digests = rec.get("rows"), rec.get("digests")
        except (OSError, ValueError, AttributeError):
            rec = rows = digests = None
        if rec is None:
            log.warning("%s is damaged; redoing strip %d", f, k)
        elif digests is None:
            legacy += 1
            ok.add(k)
        elif (isinstance(rows, list) and set(digests) == set(arrays)
              and all(0 <= int(r) < len(arrays[n]) for n in arrays for r in rows)
              and all(_digest(arrays[n][rows]) == d for n, d in digests.items())):
            ok.add(k)
        else:
            log.warning("%s: records of strip %d changed since they were committed; redoing the strip",
                        tmp, k)
        if k not in ok:
            f.unlink(missing_ok=True)
    if legacy:
        log.warning("%s: %d committed strip(s) have no checksums (an older csmae); resumed unverified",
                    tmp, legacy)
    return ok


def _parallel(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> Any:
    """Yield ``fn(item)`` for every item, ``workers`` threads each walking a contiguous share.

    Contiguous shares keep each thread in its own part of the scene, so the compressed blocks a
    strip shares with the next are decoded once (GDAL's block cache), not once per thread.
    """
    if workers == 1 or len(items) <= 1:
        for it in items:
            yield fn(it)
        return
    n = len(items)
    shares = [items[i * n // workers:(i + 1) * n // workers] for i in range(workers)]
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=4 * workers)
    stop = threading.Event()

    def work(share: Sequence[Any]) -> None:
        try:
            for it in share:
                if stop.is_set():
                    return
                q.put(("ok", fn(it)))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            q.put(("err", e))
        finally:
            q.put(("end", None))

    pool = [threading.Thread(target=work, args=(sh,), daemon=True) for sh in shares]
    for t in pool:
        t.start()
    ended = 0
    try:
        while ended < len(pool):
            kind, val = q.get()
            if kind == "end":
                ended += 1
            elif kind == "err":
                raise val
            else:
                yield val
    finally:
        stop.set()
        while any(t.is_alive() for t in pool):  # drain so blocked workers can finish
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass


def _commit(journal: Path, k: int, record: dict[str, Any]) -> None:
    tmp = journal / f".chunk-{k:05d}.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, journal / f"chunk-{k:05d}.json")


def _finalize(plan: Plan, tmp: Path, out: Path, *, chunks: int, resumed: int, options: dict[str, Any],
              overwrite: bool, sources: list[str]) -> TileResult:
    journal = tmp / JOURNAL
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    job_of: list[int] = []  # per entry: its scene job
    valid: list[int | None] = []  # per entry: valid pixels summed over its sensors
    strip_jobs = [j for j, job in enumerate(plan.jobs) for _ in range(job.grid.rows)]
    for k in range(chunks):
        rec = json.loads((journal / f"chunk-{k:05d}.json").read_text())
        entries.extend(rec["entries"])  # store_write entries: geo columns under "geo" (csmae.geo.columns)
        skipped.extend(rec["skipped"])
        job_of.extend([strip_jobs[k]] * len(rec["entries"]))
        valid.extend(rec.get("valid") or [None] * len(rec["entries"]))
        for s, v in rec["seconds"].items():
            seconds[s] = seconds.get(s, 0.0) + v
    overlap = None
    if len(plan.jobs) > 1:  # the same ground, date and sensor from two scenes: kept once
        from csmae.data.scenes.overlap import keep_once

        entries, dropped, overlap = keep_once(plan.jobs, entries, job_of, valid)
        skipped.extend(dropped)
        if overlap["dropped"]:
            log.info("%d patches of overlapping scenes dropped (the same place, sensor and acquisition kept "
                     "once; see skipped.csv)", overlap["dropped"])
    if not entries:
        raise DataError(f"every one of the {plan.patches} patches was skipped (see the reasons in "
                        f"{journal}); lower --min-valid or check the inputs", path=", ".join(sources))
    write_table(tmp, entries)
    write_skipped(tmp, skipped)
    tiling = {
        **options,
        "scenes": [_scene_info(j) for j in plan.jobs],
        "time_gaps_days": plan.gaps,
        "product_checksums": plan.product_checksums,
        **({"overlap": overlap} if overlap is not None else {}),
    }
    for sensor, reader in SCENE_READERS.items():
        tiling.update(reader.notes(get_sensor(sensor)))
    tiling["seconds"] = seconds
    write_manifest(tmp, sensors=plan.sensors, groups=plan.groups, layout=options["layout"], rows=plan.patches,
                   entries=entries, skipped=len(skipped), producer="csmae tile",
                   source={"paths": [os.path.abspath(s) for s in sources], "kind": "scenes"},
                   extra={"tiling": tiling})
    shutil.rmtree(journal)
    (tmp / PLAN).unlink()
    (tmp / ".lock").unlink(missing_ok=True)
    (tmp / PARTIAL_MARKER).unlink(missing_ok=True)
    if overwrite:
        replace_folder(tmp, out, kind=STORE_KIND)
    else:
        os.replace(tmp, out)
    log.info("tiled %s: %d patches, %d skipped", out, len(entries), len(skipped))
    messages: list[str] = []
    for j in plan.jobs:
        for sensor, srcs in j.scenes.items():
            say = getattr(reader_of(sensor), "messages", None)
            messages += [m for m in (say(srcs) if say else []) if m not in messages]
    return TileResult(path=out, patches=len(entries), skipped=len(skipped), chunks=chunks,
                      chunks_resumed=resumed, seconds=seconds, gaps=plan.gaps, messages=messages,
                      overlap_dropped=int(overlap["dropped"]) if overlap else 0)


def _scene_info(j: SceneJob) -> dict[str, Any]:
    d: dict[str, Any] = {"name": j.name, "grid": j.grid.to_dict(), "first_row": j.row_base}
    for sensor in by_priority(SCENE_READERS):
        info = SCENE_READERS[sensor].describe(j.scenes.get(sensor, ()))
        if info is not None:
            d[sensor] = info
    return d
