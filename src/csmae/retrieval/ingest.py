"""``csmae ingest``: new scenes -> tiles -> descriptors -> the same index, resumable and idempotent.

One command a cron job can run over a folder of acquisitions. Scenes are planned as ``csmae tile``
plans them (each grid scene, e.g. an S2 L2A product, with the other sensors' scenes paired onto
it: one *scene job*); then, one job at a time:

1. **tile** the job into a store (``csmae tile``'s resumable writer),
2. **embed** it with the index's model (``csmae embed``'s resumable writer),
3. **add** its items to the index (``csmae index add``), recording the job in the index manifest's
   ``"ingested"`` list *in the same atomic manifest swap*: scene name, the SHA-256 of every product
   file it was read from (by sensor and file name) and one digest over them, patch count, options.

A job already in ``"ingested"`` with the same digest is skipped and said so; one with the same name
but other file contents is refused (a reprocessed product: remove its items first, ``csmae index
remove IDX --scene NAME``, which drops its record too).

Raw S1 GRD products are calibrated and geocoded as ``csmae tile`` does (``s1_calibration``,
``s1_geocoding``, ``dem``); the record's ``"tiling"`` keeps that processing (the DEM's path and the
SHA-256 of the DEM file: for a VRT, of the VRT itself). A job already ingested with another
processing (another calibration; another geocoding; with, without or with another DEM) is
**refused before any job is done**, the index unchanged: a cron job repeats one command, and a
changed option is a person's decision, not one to act on silently. Re-doing it would replace what
search results were made of, and scenes of two processings in one archive are not comparable
(sigma0 vs gamma0 differ by incidence). The error names each such scene, its recorded processing
and the one asked for: run with the recorded options, or build another index with the new ones.
For the same reason a new scene calibrated otherwise than the raw GRD scenes the index records is
refused too; a new scene may differ in geocoding (e.g. ``--dem`` from now on), recorded per scene.
A record written before the processing was kept means the defaults of that time (sigma0, thin-plate
spline, no DEM). Options that change nothing for a job (``--s1-geocoding`` with a DEM, any of them
for a job without a raw GRD) are not compared. Items that repeat
the place, sensor and acquisition of an item already in the index from another scene grid (the
overlap of a neighbouring tile of the same pass, ingested before: :mod:`csmae.retrieval.dedupe`)
are not added again: the job's record counts them under ``"duplicates"`` (with the first few, each
naming the item kept) and the command says so. Jobs run in scene-name order, so ``ingest A B`` and
``ingest B A`` give the same index; across runs the index keeps what it already holds. Intermediate
stores and embeddings live in ``<index>.ingest-partial/<job>/`` (csmae's own work folder, marked with
``.csmae-ingest.json``; removed when the run ends). A kill at any moment leaves the index with or
without a whole job (never half), and the next run redoes only what was not committed, so it ends
with the same index as an uninterrupted run. A model other than the index's (another checkpoint or
band order) is refused before anything is read, the index unchanged.

An index that does not exist yet is built (``kind``) from the first job, with its record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: marks a work folder as csmae ingest's own (never delete a folder without it)
WORK_MARK = ".csmae-ingest.json"
#: test hook: print "ingest: at STAGE JOB" and sleep at that stage (tiled, embedded, added)
PAUSE_ENV = "CSMAE_INGEST_PAUSE_AT"


@dataclass
class IngestResult:
    """What :func:`ingest_scenes` did."""

    index: Path
    ingested: list[dict[str, Any]] = field(default_factory=list)  # records of the jobs added now
    skipped: list[str] = field(default_factory=list)  # jobs already in the index
    seconds: dict[str, float] = field(default_factory=dict)  # per stage: plan, checksum, tile, embed, add


def work_folder(index_dir: str | os.PathLike[str]) -> Path:
    """``<index>.ingest-partial``: the work folder of ingests into ``index_dir``."""
    p = Path(index_dir)
    return p.with_name(p.name + ".ingest-partial")


def ingest_scenes(
    index_dir: str | os.PathLike[str], *, model_dir: str | os.PathLike[str],
    paths: Mapping[str, Sequence[str]],
    stac: Sequence[str] = (), stride: int = 120, min_valid: float = 0.9, scl: Sequence[int] | None = None,
    s1_units: str | None = None, max_days: float | None = None, boa_offset: float | None = None,
    precision: str = "auto", batch_size: int = 64, device: str = "auto", kind: str = "exact",
    product_checksums: bool = True, say: Callable[[str], None] = log.info,
    s1_calibration: str = "sigma0", s1_geocoding: str = "tps", dem: str | None = None,
) -> IngestResult:
    """Tile, embed and add scenes to an index (see the module docstring).

    Args:
        index_dir: the index folder (built from the first scene job when it does not exist).
        model_dir: the model the index was built with (checked by sha256).
        paths: sensor -> input paths (as ``csmae tile --s2/--s1``); stac: local STAC Item files.
        stride, min_valid, scl, s1_units, max_days, boa_offset: tiling options (``csmae tile``).
        precision, batch_size, device: embedding options (``csmae embed``).
        kind: the index kind of a new index.
        say: called with one line per scene job (skipped, ingested).
        s1_calibration, s1_geocoding, dem: raw GRD processing (``csmae tile``'s options).

    Raises:
        ValueError: another model than the index's, a scene re-ingested from other files or with
            another raw-GRD processing, bad inputs.
    """
    from csmae.data.scenes.plan import plan_tiling

    index_dir, model_dir = Path(index_dir), Path(model_dir)
    res = IngestResult(index=index_dir)
    t0 = time.perf_counter()
    man = _index_manifest(index_dir)
    if man is not None:
        from csmae.retrieval.query_encoder import check_model_matches_index

        check_model_matches_index(model_dir, man.get("model") or {}, int(man["dim"]))
    elif not (model_dir / "model.safetensors").exists():
        raise FileNotFoundError(f"{model_dir} is not a model folder (no model.safetensors)")
    options = {"s1_units": s1_units, "boa_offset": boa_offset, "product_checksums": product_checksums,
               "s1_calibration": s1_calibration, "s1_geocoding": s1_geocoding, "dem": dem}
    plan = plan_tiling(paths=paths, stac=stac, stride=stride, min_valid=min_valid, scl=scl, max_days=max_days,
                       layout="float32", options=options)
    tiling = {"stride": stride, "min_valid": min_valid, "scl": plan.jobs[0].scl_codes, "s1_units": s1_units,
              "boa_offset": boa_offset}
    res.seconds["plan"] = time.perf_counter() - t0
    done = {r["scene"]: r for r in (man or {}).get("ingested") or []}
    t = time.perf_counter()
    processing = _processing(plan.jobs, options)
    res.seconds["checksum"] = time.perf_counter() - t
    _refuse_other_processing(index_dir, plan.jobs, processing, done)
    work = _claim_work(work_folder(index_dir), index_dir)
    for job in plan.jobs:
        t = time.perf_counter()
        files = _job_files(job)
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        res.seconds["checksum"] = res.seconds.get("checksum", 0.0) + time.perf_counter() - t
        prior = done.get(job.name)
        if prior is not None:
            if prior.get("digest") != digest:
                raise ValueError(
                    f"scene {job.name} was already ingested into {index_dir} from other files (digest "
                    f"{str(prior.get('digest'))[:12]}..., now {digest[:12]}...: a reprocessed product?); "
                    f"nothing was changed. Remove its items first (csmae index remove {index_dir} --scene "
                    f"{job.name}) to ingest it again")
            res.skipped.append(job.name)
            say(f"{job.name}: already ingested ({prior.get('patches')} patches), skipped")
            continue
        record: dict[str, Any] = {"scene": job.name, "digest": digest, "files": files,
                                  "tiling": {**tiling, **processing[job.name]},
                                  "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        record["patches"], dups = _ingest_job(job, plan, record, work=work, index_dir=index_dir,
                                              model_dir=model_dir,
                                              tiling=tiling, precision=precision, batch_size=batch_size,
                                              device=device, kind=kind, seconds=res.seconds,
                                              processing=processing[job.name])
        record["duplicates"] = dups
        done[job.name] = record
        res.ingested.append(record)
        again = (f"; {dups['count']} items not added again: the same place, sensor and acquisition is in the "
                 f"index already (e.g. {dups['examples'][0]['id']} as {dups['examples'][0]['kept']})"
                 if dups["count"] else "")
        say(f"{job.name}: ingested {record['patches']} patches{again}")
    shutil.rmtree(work, ignore_errors=True)
    return res


#: a raw GRD's processing as a record keeps it, and what a record written before it was kept means
PROCESSING_DEFAULTS: dict[str, Any] = {"s1_calibration": "sigma0", "s1_geocoding": "tps", "dem": None,
                                       "dem_sha256": None}


def _processing(jobs: Sequence[Any], options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """job name -> the reader options that shaped its pixels (raw GRD: calibration, geocoding, the DEM
    with its SHA-256, hashed once); ``{}`` for a job without a raw GRD product."""
    from csmae.data.scenes.readers import reader_of
    from csmae.retrieval.artifacts import sha256_file

    out: dict[str, dict[str, Any]] = {}
    dem_sha: dict[str, str] = {}
    for job in jobs:
        used: dict[str, Any] = {}
        for sensor, sources in job.scenes.items():
            of = getattr(reader_of(sensor), "options_used", None)
            if of is not None:
                used.update(of(list(sources), options, strict=False))
        if used.get("dem"):
            if used["dem"] not in dem_sha:
                dem_sha[used["dem"]] = sha256_file(used["dem"])
            used["dem_sha256"] = dem_sha[used["dem"]]
        out[job.name] = used
    return out


def _identity(processing: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two processings of a raw GRD the same: the calibration, and the DEM's bytes or else
    the GCP geocoding (unused with a DEM)."""
    p = {**PROCESSING_DEFAULTS, **processing}
    return (p["s1_calibration"], p["dem_sha256"] if p["dem_sha256"] else p["s1_geocoding"])


def _said(processing: Mapping[str, Any]) -> str:
    p = {**PROCESSING_DEFAULTS, **processing}
    how = (f"terrain-corrected with the DEM {p['dem']} (SHA-256 {str(p['dem_sha256'])[:12]}...)"
           if p["dem_sha256"] else f"{p['s1_geocoding']} GCP geocoding, no DEM")
    return f"{p['s1_calibration']}, {how}"


def _refuse_other_processing(index_dir: Path, jobs: Sequence[Any], processing: Mapping[str, dict[str, Any]],
                             done: Mapping[str, Mapping[str, Any]]) -> None:
    """ValueError naming every job already ingested with another raw-GRD processing (module docstring)."""
    clash = []
    held = sorted({str(r["tiling"]["s1_calibration"]) for r in done.values()
                   if "s1_calibration" in (r.get("tiling") or {})})
    for job in jobs:
        prior, now = done.get(job.name), processing[job.name]
        if not now:
            continue
        if prior is None:
            cal = now.get("s1_calibration", PROCESSING_DEFAULTS["s1_calibration"])
            if held and cal not in held:
                clash.append(f"{job.name}: this run calibrates to {cal}, the index's raw GRD scenes are "
                             f"{' / '.join(held)} (not comparable: they differ with the incidence angle)")
            continue
        before = {k: v for k, v in (prior.get("tiling") or {}).items() if k in PROCESSING_DEFAULTS}
        if _identity(before) != _identity(now):
            clash.append(f"{job.name}: ingested as {_said(before)}; this run: {_said(now)}")
    if clash:
        raise ValueError(
            f"{len(clash)} scene(s) clash with the S1 GRD processing recorded in {index_dir} (nothing was "
            f"changed): {'; '.join(clash)}. Run with the recorded options (--s1-calibration, "
            "--s1-geocoding, --dem), or ingest into another index")


def _index_manifest(index_dir: Path) -> dict[str, Any] | None:
    if not index_dir.exists():
        return None
    mf = index_dir / "manifest.json"
    if not mf.is_file():
        raise ValueError(f"{index_dir} exists but is not a csmae index folder (no manifest.json)")
    man: dict[str, Any] = json.loads(mf.read_text())
    return man


def _claim_work(work: Path, index_dir: Path) -> Path:
    """The work folder, created or recognised as csmae's (refusing any other folder of that name)."""
    mark = work / WORK_MARK
    if work.exists() and not mark.is_file():
        raise FileExistsError(f"{work} exists and is not a csmae ingest work folder: move it away")
    work.mkdir(parents=True, exist_ok=True)
    if not mark.is_file():
        from csmae.atomic import write_json_atomic

        write_json_atomic(mark, {"index": str(index_dir.resolve()), "producer": "csmae ingest"})
    return work


def _job_files(job: Any) -> dict[str, dict[str, str]]:
    """sensor -> {file name: sha256} of every product file the job reads."""
    from csmae.data.scenes.readers import reader_of
    from csmae.retrieval.artifacts import sha256_file

    out: dict[str, dict[str, str]] = {}
    for sensor, sources in job.scenes.items():
        files = sorted({_on_disk(f) for s in sources for f in reader_of(sensor).files(s)})
        out[sensor] = {_file_key(f, files): sha256_file(f) for f in files}
    return out


def _on_disk(path: str) -> str:
    """The file on disk a reader's path is in: a zipped product's member, as GDAL names it
    (``/vsizip/data/X.SAFE.zip/X.SAFE/GRANULE/...jp2``), is in its zip (``/data/X.SAFE.zip``, hashed
    whole, once)."""
    if not path.startswith("/vsizip/"):
        return path
    inner = path[len("/vsizip"):]
    end = inner.lower().find(".zip/")
    return inner[: end + 4] if end >= 0 else inner


def _file_key(f: str, files: list[str]) -> str:
    """A file's name, with its parent folder where two files of the job share a name."""
    name = os.path.basename(f)
    same = [g for g in files if os.path.basename(g) == name]
    return name if len(same) == 1 else os.path.join(os.path.basename(os.path.dirname(f)), name)


def _ingest_job(job: Any, plan: Any, record: dict[str, Any], *, work: Path, index_dir: Path, model_dir: Path,
                tiling: dict[str, Any], precision: str, batch_size: int, device: str, kind: str,
                seconds: dict[str, float], processing: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """Tile, embed and add one scene job; returns its patch count and the duplicates left out
    (:meth:`csmae.retrieval.dedupe.Duplicates.record`). ``processing``: the raw-GRD options of the job
    (recorded in its store's manifest and keying its work folder: a store tiled with other options
    by a killed run is never reused)."""
    from csmae.data.scenes.plan import Plan
    from csmae.data.scenes.readers import reader_of
    from csmae.data.scenes.run import tile_plan
    from csmae.retrieval.embed import embed_dataset
    from csmae.retrieval.embeddings import load_embeddings

    key = record["digest"] if not processing else hashlib.sha256(
        (record["digest"] + json.dumps(dict(processing), sort_keys=True)).encode()).hexdigest()
    folder = work / f"{_safe_name(job.name)}-{key[:16]}"
    store, emb_dir = folder / "store", folder / "emb"
    t = time.perf_counter()
    if not (store / "manifest.json").is_file():
        one = dataclasses.replace(job, row_base=0)
        inputs = sorted({f for s, srcs in job.scenes.items() for src in srcs
                         for f in reader_of(s).files(src)})
        sub = Plan(jobs=[one], sensors=plan.sensors, groups=plan.groups, inputs=inputs,
                   gaps=[g for g in plan.gaps if job.name in g.values()], options_used=dict(processing))
        folder.mkdir(parents=True, exist_ok=True)
        tile_plan(sub, store, stride=tiling["stride"], min_valid=tiling["min_valid"], layout="float32",
                  s1_units=tiling["s1_units"], boa_offset=tiling["boa_offset"],
                  sources=[str(src.scene.source) for srcs in job.scenes.values() for src in srcs])
    seconds["tile"] = seconds.get("tile", 0.0) + time.perf_counter() - t
    _pause("tiled", job.name)
    t = time.perf_counter()
    if not (emb_dir / "manifest.json").is_file():
        embed_dataset(model_dir, [str(store)], emb_dir, precision=precision, batch_size=batch_size,
                      device=device)
    seconds["embed"] = seconds.get("embed", 0.0) + time.perf_counter() - t
    _pause("embedded", job.name)
    t = time.perf_counter()
    emb = load_embeddings(emb_dir)
    record = {**record, "patches": int(len(set(emb.ids.tolist())))}
    if index_dir.exists():  # items already in the index (the same ground, sensor, acquisition) are left out
        from csmae.retrieval.index_grow import add_embeddings

        rep = add_embeddings(index_dir, emb, ingested=[record], duplicates="drop")
        dups = {"count": rep.duplicates, "examples": rep.duplicate_examples or []}
    else:
        from csmae.retrieval.dedupe import find_duplicates
        from csmae.retrieval.index import build_index

        found = find_duplicates(emb.ids, emb.sensors, emb.meta)
        dups = found.record()
        si = build_index(emb.select(~found.drop) if found.count else emb, kind=kind)
        si.manifest["ingested"] = [{**record, "duplicates": dups}]
        si.save(index_dir)
    seconds["add"] = seconds.get("add", 0.0) + time.perf_counter() - t
    _pause("added", job.name)
    shutil.rmtree(folder, ignore_errors=True)
    return int(record["patches"]), dups


def _safe_name(name: str) -> str:
    """A scene name as one plain folder name inside the work folder (never a path out of it)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")[:120] or "scene"


def _pause(stage: str, job: str) -> None:
    """Test hook (:data:`PAUSE_ENV`): announce the stage and wait to be killed."""
    if os.environ.get(PAUSE_ENV) == stage:
        sys.stdout.write(f"ingest: at {stage} {job}\n")  # read by the kill test
        sys.stdout.flush()
        time.sleep(3600)
