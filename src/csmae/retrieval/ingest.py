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
but other file contents is refused (a reprocessed product: remove its items first). Intermediate
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

    Raises:
        ValueError: another model than the index's, a scene re-ingested from other files, bad inputs.
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
    plan = plan_tiling(paths=paths, stac=stac, stride=stride, min_valid=min_valid, scl=scl, max_days=max_days,
                       layout="float32", options={"s1_units": s1_units, "boa_offset": boa_offset,
                                                  "product_checksums": product_checksums})
    tiling = {"stride": stride, "min_valid": min_valid, "scl": plan.jobs[0].scl_codes, "s1_units": s1_units,
              "boa_offset": boa_offset}
    res.seconds["plan"] = time.perf_counter() - t0
    done = {r["scene"]: r for r in (man or {}).get("ingested") or []}
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
                    "nothing was changed. Remove its items first (csmae index remove) to ingest it again")
            res.skipped.append(job.name)
            say(f"{job.name}: already ingested ({prior.get('patches')} patches), skipped")
            continue
        record: dict[str, Any] = {"scene": job.name, "digest": digest, "files": files, "tiling": tiling,
                  "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        record["patches"] = _ingest_job(job, plan, record, work=work, index_dir=index_dir,
                                        model_dir=model_dir,
                                        tiling=tiling, precision=precision, batch_size=batch_size,
                                        device=device, kind=kind, seconds=res.seconds)
        done[job.name] = record
        res.ingested.append(record)
        say(f"{job.name}: ingested {record['patches']} patches")
    shutil.rmtree(work, ignore_errors=True)
    return res


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
        files = sorted({f for s in sources for f in reader_of(sensor).files(s)})
        out[sensor] = {_file_key(f, files): sha256_file(f) for f in files}
    return out


def _file_key(f: str, files: list[str]) -> str:
    """A file's name, with its parent folder where two files of the job share a name."""
    name = os.path.basename(f)
    same = [g for g in files if os.path.basename(g) == name]
    return name if len(same) == 1 else os.path.join(os.path.basename(os.path.dirname(f)), name)


def _ingest_job(job: Any, plan: Any, record: dict[str, Any], *, work: Path, index_dir: Path, model_dir: Path,
                tiling: dict[str, Any], precision: str, batch_size: int, device: str, kind: str,
                seconds: dict[str, float]) -> int:
    """Tile, embed and add one scene job; returns its patch count."""
    from csmae.data.scenes.plan import Plan
    from csmae.data.scenes.readers import reader_of
    from csmae.data.scenes.run import tile_plan
    from csmae.retrieval.embed import embed_dataset
    from csmae.retrieval.embeddings import load_embeddings

    folder = work / f"{_safe_name(job.name)}-{record['digest'][:16]}"
    store, emb_dir = folder / "store", folder / "emb"
    t = time.perf_counter()
    if not (store / "manifest.json").is_file():
        one = dataclasses.replace(job, row_base=0)
        inputs = sorted({f for s, srcs in job.scenes.items() for src in srcs
                         for f in reader_of(s).files(src)})
        sub = Plan(jobs=[one], sensors=plan.sensors, groups=plan.groups, inputs=inputs,
                   gaps=[g for g in plan.gaps if job.name in g.values()])
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
    if index_dir.exists():
        from csmae.retrieval.index_grow import add_embeddings

        add_embeddings(index_dir, emb, ingested=[record])
    else:
        from csmae.retrieval.index import build_index

        si = build_index(emb, kind=kind)
        si.manifest["ingested"] = [record]
        si.save(index_dir)
    seconds["add"] = seconds.get("add", 0.0) + time.perf_counter() - t
    _pause("added", job.name)
    shutil.rmtree(folder, ignore_errors=True)
    return int(record["patches"])


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
