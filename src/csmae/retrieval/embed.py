"""Compute descriptors of a dataset with a saved model and write an embeddings folder.

Resumable: work happens in ``<out>.partial/`` (shards of ``shard_pairs`` pairs, each written
atomically, plus ``plan.json``); a rerun with the same model, data and options keeps the finished
shards and continues. The folder is moved to ``<out>`` only when complete (with manifest.json).

One device (CPU or one GPU) runs in this process. ``devices > 1`` or ``num_nodes > 1`` runs
Lightning's ``Trainer.predict`` under DDP (:mod:`csmae.retrieval.embed_distributed`): every rank
embeds whole shards (shard ``i`` goes to rank ``i % world_size``) and rank 0 writes the manifest.

With ``device_transforms`` (default on a CUDA device) a prepared store's records travel as stored
(uint16 native S2 bands, float32 S1, pinned memory) and are upsampled and normalised on the device
(:func:`csmae.models.device_batch.assemble`), with the same result as the host path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from csmae.atomic import PARTIAL_MARKER, check_partial, check_replaceable, clear_partial
from csmae.integrity import checksum_files
from csmae.retrieval.artifacts import base_manifest, replace_folder, sha256_file, write_json_atomic
from csmae.retrieval.embeddings import KIND, write_shard
from csmae.sensors import Sensor

log = logging.getLogger(__name__)

#: Environment variables Lightning, torchrun and SLURM set in launched ranks (rank 0 is the launching
#: process, or the first task).
_RANK_VARS = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")
#: pairs read between two unmappings of a memory-mapped dataset's files (StoreDataset.release)
RELEASE_PAIRS = 256


def band_permutation(have: Sequence[str], want: Sequence[str], *, sensor: str) -> np.ndarray | None:
    """Channel indices taking arrays in band order ``have`` to order ``want`` (None if identical)."""
    missing = [b for b in want if b not in have]
    if missing:
        raise ValueError(
            f"{sensor}: the model needs band(s) {missing} which the data does not have "
            f"(data bands {list(have)}; model bands {list(want)})"
        )
    perm = np.array([list(have).index(b) for b in want], dtype=np.int64)
    return None if len(have) == len(want) and np.array_equal(perm, np.arange(len(want))) else perm


def model_info(model_dir: str | os.PathLike[str], model: Any) -> dict[str, Any]:
    """What the manifests record about the model that made the vectors."""
    model_dir = Path(model_dir)
    weights = model_dir / "model.safetensors"
    cfg = model.config
    return {
        "dir": str(model_dir.resolve()),
        "sha256": sha256_file(weights) if weights.exists() else None,
        "name": getattr(cfg, "name", None),
        "variant": getattr(cfg, "variant", None),
        "pooling": getattr(cfg, "pooling", None),
        "dim": int(model.embed_dim),
        "sensors": list(model.sensors),
    }


def _reader(
    ds: Any, sensors: list[str], perms: dict[str, np.ndarray | None], *, compact: bool = False
) -> Callable[[np.ndarray], dict]:
    """indices -> {sensor: raw (B, C, H, W) in the model's band order, labels, id}.

    ``compact``: the store's records as stored instead (``get_raw_batch``, see :func:`device_layout`).
    """

    def compact_read(idx: np.ndarray) -> dict[str, Any]:
        b = ds.get_raw_batch(idx)
        return {**b, "labels": np.asarray(b["labels"], bool), "id": list(b["id"])}

    def fast(idx: np.ndarray) -> dict[str, Any]:
        b = ds.get_batch(idx)
        return {
            **{s: b[s] if perms[s] is None else b[s][:, perms[s]] for s in sensors},
            "labels": np.asarray(b["labels"], bool),
            "id": list(b["id"]),
        }

    def slow(idx: np.ndarray) -> dict[str, Any]:
        samples = [ds[int(i)] for i in idx]
        out: dict[str, Any] = {
            "labels": np.stack([np.asarray(s["labels"], bool) for s in samples]),
            "id": [s["id"] for s in samples],
        }
        for s in sensors:
            x = np.stack([np.asarray(smp[s], np.float32) for smp in samples])
            out[s] = x if perms[s] is None else x[:, perms[s]]
        return out

    read = compact_read if compact else fast if hasattr(ds, "get_batch") else slow
    release = getattr(ds, "release", None)
    if release is None:
        return read
    since = [0]

    def bounded(idx: np.ndarray) -> dict[str, Any]:
        """``read``, unmapping the dataset's files every RELEASE_PAIRS pairs (in each reader
        process): a memory-mapped store's pages would otherwise count in RSS up to its size."""
        out = read(idx)
        since[0] += len(idx)
        if since[0] >= RELEASE_PAIRS:
            release()
            since[0] = 0
        return out

    return bounded


def device_layout(ds: Any, sensors: dict[str, Sensor], mode: bool | str, device: Any) -> tuple[Any, bool]:
    """(layout of the raw batches, whether they are compact records) for ``device_transforms=mode``."""
    from csmae.models.device_batch import dense_layout, store_layout

    if mode not in (True, False, "auto"):
        raise ValueError(f"device_transforms must be true, false or 'auto', got {mode!r}")
    on = mode is True or (mode == "auto" and getattr(device, "type", str(device)).startswith("cuda"))
    compact = store_layout(ds, sensors) if on else None
    return (compact, True) if compact is not None else (dense_layout(sensors), False)


class BatchList:
    """A map-style dataset whose item ``i`` is the raw batch of pair indices ``batches[i]``."""

    def __init__(self, read: Callable[[np.ndarray], dict], batches: list[np.ndarray]) -> None:
        self.read, self.batches = read, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        return self.read(self.batches[i])


def batch_loader(
    read: Callable[[np.ndarray], dict], batches: list[np.ndarray], workers: int, *, pin: bool = False
) -> Iterable[dict]:
    """Read batches in order, in this process (``workers=0``) or in DataLoader worker processes.

    ``pin``: hand the batches over in pinned memory (for fast asynchronous copies to a GPU).
    """
    data = BatchList(read, batches)
    if workers <= 0:
        return (_pinned(data[i]) if pin else data[i] for i in range(len(data)))
    from torch.utils.data import DataLoader

    return DataLoader(
        data,  # type: ignore[arg-type]
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4,
        pin_memory=pin,
        collate_fn=_arrays_to_tensors,  # type: ignore[arg-type]
    )


def _arrays_to_tensors(batch: dict) -> dict:
    """numpy arrays -> tensors (so a worker hands them over in shared memory and they can be pinned)."""
    import torch

    return {
        k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) and v.dtype != bool else v
        for k, v in batch.items()
    }


def _pinned(batch: dict) -> dict:
    moved = _arrays_to_tensors(batch)
    return {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in moved.items()}


@dataclass
class EmbedJob:
    """Everything a process needs to embed its batches and write shards of ``work``."""

    model: Any
    want: list[str]  # sensors to embed, in output order
    model_sensors: dict[str, Sensor]
    read: Callable[[np.ndarray], dict]
    ids: list[str]
    splits: list[Any]
    work: Path  # the <out>.partial folder
    shards: list[dict[str, Any]]  # {"file", "pairs", "rows"} per shard
    shard_pairs: int
    batch_size: int
    n: int
    precision: str
    layout: Any = None  # raw batch arrays (csmae.models.device_batch); None: one dense array per sensor
    pin: bool = False  # loaders hand batches over in pinned memory
    acc: dict[str, list[Any]] = field(default_factory=dict)
    #: pair index -> metadata (geo keys, country, season) without pixels; None = the source has none
    pair_meta: Callable[[int], dict[str, Any]] | None = None
    #: replaces ``model.embed`` (a :class:`csmae.models.compiled.CompiledEmbed`); None = eager
    runner: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def shard_range(self, si: int) -> tuple[int, int]:
        return si * self.shard_pairs, min(self.n, (si + 1) * self.shard_pairs)

    def pending(self, shard_ids: Iterable[int] | None = None) -> list[tuple[int, np.ndarray]]:
        """(shard, pair indices) of every batch of the unfinished shards (of ``shard_ids``)."""
        out: list[tuple[int, np.ndarray]] = []
        for si in range(len(self.shards)) if shard_ids is None else shard_ids:
            if (self.work / self.shards[si]["file"]).exists():
                continue
            lo, hi = self.shard_range(si)
            out += [(si, np.arange(b, min(hi, b + self.batch_size))) for b in range(lo, hi, self.batch_size)]
        return out

    def pairs_done(self) -> int:
        return sum(s["pairs"] for s in self.shards if (self.work / s["file"]).exists())

    def embed(self, raw: dict[str, Any], device: Any) -> dict[str, np.ndarray]:
        """Raw batch -> {sensor: (B, D) float32} (the caller sets autocast / inference mode)."""
        import torch

        from csmae.models.device_batch import assemble, dense_layout

        sensors = {s: self.model_sensors[s] for s in self.want}
        layout = self.layout or dense_layout(sensors)
        # move the raw records first, upsample and normalise on the device (a GPU outruns the CPU)
        moved = {g.key: torch.as_tensor(raw[g.key]).to(device, non_blocking=True) for g in layout}
        batch = assemble(moved, layout, sensors)
        emb = (self.runner or self.model.embed)(batch)
        return {s: emb[s].float().cpu().numpy() for s in self.want}

    def add(self, si: int, idx: np.ndarray, raw: dict[str, Any], emb: dict[str, np.ndarray]) -> None:
        """Keep a computed batch; write shard ``si`` when its last batch arrives (batches come in order)."""
        if list(raw["id"]) != self.ids[idx[0] : idx[-1] + 1]:
            raise RuntimeError("dataset returned samples out of order")
        for s in self.want:
            self.acc.setdefault(s, []).append(emb[s])
        self.acc.setdefault("labels", []).append(np.asarray(raw["labels"], dtype=bool))
        self.acc.setdefault("ids", []).extend(raw["id"])
        lo, hi = self.shard_range(si)
        if idx[-1] + 1 == hi:  # shard complete
            self._write(self.work / self.shards[si]["file"], self.splits[lo:hi], lo, hi)
            log.info("wrote %s (%d pairs)", self.shards[si]["file"], hi - lo)
            self.acc = {}

    def _meta(self, lo: int, hi: int) -> dict[str, list[Any]] | None:
        """Per-row geo columns of pairs lo..hi (rows interleaved per sensor like the vectors)."""
        if self.pair_meta is None:
            return None
        rows: dict[str, list[Any]] = {c: [] for c in ("geometry", "datetime", "country", "season", "scene",
                                                      "place")}
        for i in range(lo, hi):
            m = self.pair_meta(i)
            times, scenes = m.get("datetime") or {}, m.get("scene") or {}
            for s in self.want:
                rows["geometry"].append(m.get("geometry"))
                rows["datetime"].append(times.get(s))
                rows["scene"].append(scenes.get(s))
                rows["country"].append(m.get("country"))
                rows["season"].append(m.get("season"))
                rows["place"].append(m.get("place"))  # None: computed from the geometry when written
        return rows

    def _write(self, path: Path, splits: list[Any], lo: int, hi: int) -> None:
        acc, want = self.acc, self.want
        lab = np.concatenate(acc["labels"])
        m = len(lab)
        # interleave rows pair by pair: (pair0, s1), (pair0, s2), (pair1, s1), ...
        vec = np.stack([np.concatenate(acc[s]) for s in want], axis=1).reshape(m * len(want), -1)
        _report_nonfinite(path, vec, [str(i) for i in acc["ids"]], want)
        write_shard(
            path,
            ids=[str(i) for i in acc["ids"] for _ in want],
            sensors=want * m,
            splits=[sp for sp in splits for _ in want],
            labels=np.repeat(lab, len(want), axis=0),
            vectors=vec,
            meta=self._meta(lo, hi),
        )


def _report_nonfinite(path: Path, vec: np.ndarray, ids: list[str], want: list[str]) -> None:
    """Warn about NaN/inf descriptors (rows interleaved pair by pair); ``csmae index`` skips them."""
    from csmae.integrity import finite_rows

    bad = np.flatnonzero(~finite_rows(vec))
    if len(bad):
        shown = ", ".join(f"{ids[r // len(want)]}/{want[r % len(want)]}" for r in bad[:10])
        log.warning("%s: the model gave %d descriptor(s) with NaN/inf values (%s%s); they are kept "
                    "in the shard but never indexed", path.name, len(bad), shown,
                    " ..." if len(bad) > 10 else "")


def is_launched_rank() -> bool:
    """True in a rank that Lightning/torchrun started (not the process the user launched)."""
    return any(os.environ.get(v, "0") not in ("", "0") for v in _RANK_VARS)


def _default_sensors(model_sensors: dict[str, Sensor], sources: Sequence[Any], dataset: Any) -> list[str]:
    """The model's sensors that the data has (a single-sensor store embeds its one sensor)."""
    from csmae.data.store import is_store, read_manifest

    have: Any = None
    if dataset is not None:
        have = dataset.sensors
    elif len(sources) == 1 and is_store(sources[0]):
        have = read_manifest(sources[0])["sensors"]
    if have is None:
        return list(model_sensors)
    return [s for s in model_sensors if s in have] or list(model_sensors)


def embed_dataset(
    model_dir: str | os.PathLike[str],
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    split: str | Sequence[str] | None = None,
    sensors: Sequence[str] | None = None,
    batch_size: int = 64,
    precision: str = "auto",
    shard_pairs: int = 4096,
    device: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    workers: int = 0,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    dataset: Any = None,
    device_transforms: bool | str = "auto",
    compiled: bool = True,
) -> Path:
    """Embed every pair (and each requested sensor) of a dataset; returns the embeddings folder.

    Args:
        model_dir: folder written by ``save_pretrained``.
        sources: dataset source path(s) for :func:`csmae.data.open_dataset`.
        out: output folder (must not exist unless ``overwrite``; replaced only when complete).
        split: keep only pairs of this split / these splits.
        sensors: sensors to embed (default: those of the model).
        batch_size: pairs per forward pass (per device).
        precision: ``"auto"`` (bf16 where the device runs bf16 matmuls natively, fp32 elsewhere: see
            :mod:`csmae.models.precision`), ``"bf16"`` (autocast) or ``"fp32"``. The manifest records
            what ran (``precision``) and the choice (``precision_choice``).
        shard_pairs: pairs per Parquet shard (the unit of resumption and of work per rank).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``... (``"cuda"``/``"gpu"`` or
            ``"cpu"`` when ``devices > 1``).
        devices: devices per node; more than one runs Lightning ``Trainer.predict`` with DDP, which
            re-launches the running script once per extra device (as ``csmae fit`` does), so call it
            from a script or the CLI, not from a notebook.
        num_nodes: nodes of a multi-node run (torchrun / SLURM set the ranks).
        workers: DataLoader worker processes reading batches (0 = read in this process).
        on_progress: called with (pairs done, total pairs) after each batch (on rank 0 only, which
            counts its own batches times the number of ranks when several run).
        dataset: an already opened dataset to use instead of opening ``sources``.
        device_transforms: read a prepared store's records as stored and upsample/normalise them on
            the device (same descriptors); ``"auto"``: on a CUDA device.
        compiled: use the inductor-compiled model where it pays (CPU with AMX, large jobs; same descriptors
            within the tolerance the manifest records, see :mod:`csmae.models.compiled`); False:
            eager (``--no-compile``).
    """
    import torch

    from csmae.data import open_dataset
    from csmae.models import from_pretrained
    from csmae.models.precision import PRECISIONS, choose_precision

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if devices < 1 or num_nodes < 1:
        raise ValueError(f"devices and num_nodes must be >= 1, got {devices} and {num_nodes}")
    distributed = devices > 1 or num_nodes > 1
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")
    if overwrite:
        check_replaceable(out, KIND)  # before the work: --overwrite replaces only embeddings
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device("cpu") if distributed else torch.device(device)
    runs_on = torch.device("cuda" if device in ("cuda", "gpu") else device) if distributed else dev
    choice = choose_precision(precision, runs_on, what="embedding precision")
    precision = choice.precision
    model = from_pretrained(Path(model_dir), map_location=dev)
    info = model_info(model_dir, model)
    if precision == "bf16":  # same descriptors bit for bit, without autocast's per-batch weight casts
        from csmae.models.precision import cast_matmul_weights

        cast_matmul_weights(model)
    model_sensors: dict[str, Sensor] = dict(model.sensors)
    want = list(sensors) if sensors else _default_sensors(model_sensors, sources, dataset)
    lacking = [s for s in want if s not in model_sensors]
    if lacking:
        raise ValueError(f"the model has no sensor(s) {lacking}; it embeds {list(model_sensors)}")
    if dataset is None:
        s2 = model_sensors.get("s2")
        s2_bands = list(s2.bands) if s2 is not None and "s2" in want else None
        dataset = open_dataset(*sources, sensors=tuple(want), s2_bands=s2_bands, split=split)
    ds = dataset
    missing = [s for s in want if s not in ds.sensors]
    if missing:
        raise ValueError(f"the dataset has no sensor(s) {missing} (it has {list(ds.sensors)})")
    perms = {s: band_permutation(ds.sensors[s].bands, model_sensors[s].bands, sensor=s) for s in want}
    n = len(ds)
    if n == 0:
        raise ValueError("the dataset is empty (after the split filter): nothing to embed")
    ids = list(ds.ids)
    plan = {
        "model_sha256": info["sha256"],
        "sources": [str(Path(s).resolve()) for s in sources],
        "split": split,
        "sensors": want,
        "shard_pairs": shard_pairs,
        "n": n,
        "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        "precision": precision,
    }
    work = out.with_name(out.name + ".partial")
    if not is_launched_rank():  # launched ranks find rank 0's fresh plan
        check_partial(work, "embed", legacy=_legacy_partial)  # a symlink or user folder: refused
        try:
            old = json.loads((work / "plan.json").read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if work.exists() and old != plan:
            log.warning("%s belongs to another run (different model/data/options): starting over", work)
            clear_partial(work)
        work.mkdir(parents=True, exist_ok=True)
        write_json_atomic(work / PARTIAL_MARKER, {"kind": "embed"})
    work.mkdir(parents=True, exist_ok=True)
    if not is_launched_rank():
        write_json_atomic(work / "plan.json", plan)
    shards: list[dict[str, Any]] = []
    for si in range(-(-n // shard_pairs)):
        lo, hi = si * shard_pairs, min(n, (si + 1) * shard_pairs)
        shards.append({"file": f"part-{si:05d}.parquet", "pairs": hi - lo, "rows": (hi - lo) * len(want)})
    target = runs_on
    layout, compact = device_layout(ds, {s: model_sensors[s] for s in want}, device_transforms, target)
    job = EmbedJob(
        model=model, want=want, model_sensors=model_sensors, read=_reader(ds, want, perms, compact=compact),
        ids=ids, splits=list(ds.splits()), work=work, shards=shards, shard_pairs=shard_pairs,
        batch_size=batch_size, n=n, precision=precision, layout=layout, pin=target.type == "cuda",
        pair_meta=getattr(ds, "metadata", None),
    )
    if distributed:
        from csmae.retrieval.embed_distributed import predict_shards

        rank = predict_shards(
            job, accelerator=device, devices=devices, num_nodes=num_nodes, workers=workers,
            on_progress=on_progress,
        )
        if rank != 0:
            return out  # rank 0 checks the shards and moves the folder into place
        missing_shards = [s["file"] for s in shards if not (work / s["file"]).exists()]
        if missing_shards:
            raise RuntimeError(f"{work}: shard(s) {missing_shards} were not written by any rank")
        compile_facts: dict[str, Any] = {"used": False, "backend": "eager", "reason": "distributed run"}
    else:
        from csmae.models.compiled import compiled_embed

        runner = compiled_embed(model, device=dev, precision=precision, pairs=n - job.pairs_done(),
                                batch_size=batch_size, enabled=compiled)
        job.runner = runner
        _embed_here(job, dev, workers=workers, on_progress=on_progress)
        compile_facts = runner.describe()
    manifest = base_manifest(
        KIND,
        model=info,
        dim=info["dim"],
        sensors={s: model_sensors[s].to_dict() for s in want},
        normalisation="per-band (x - mean) / std with the sensors' mean/std",
        dataset={"sources": plan["sources"], "split": split, "kind": getattr(ds, "kind", ""), "pairs": n,
                 **_geo_facts(ds)},
        label_names=list(getattr(ds, "label_names", [])),
        precision=precision,
        precision_choice=choice.describe(),
        compiled=compile_facts,
        count=n * len(want),
        shards=shards,
        checksums=checksum_files(work, [s["file"] for s in shards]),  # verified when read
    )
    write_json_atomic(work / "manifest.json", manifest)
    (work / "plan.json").unlink(missing_ok=True)
    (work / PARTIAL_MARKER).unlink(missing_ok=True)
    replace_folder(work, out, kind=KIND)
    return out


def _legacy_partial(work: Path) -> bool:
    """An unfinished embedding of a csmae from before partial markers: a plan and shards only."""
    plan = work / "plan.json"
    if plan.is_symlink() or not plan.is_file():
        return False
    return all(p.name in ("plan.json", ".lock") or (p.name.startswith("part-") and p.is_file()
               and not p.is_symlink()) or p.name.startswith(".") for p in work.iterdir())


def _geo_facts(ds: Any) -> dict[str, Any]:
    """What a store's manifest says about its footprints ("geo", "geo_synthetic"), for the manifests."""
    man = getattr(ds, "manifest", None)
    if not isinstance(man, dict):
        return {}
    return {k: man[k] for k in ("geo", "geo_synthetic") if k in man}


def _embed_here(
    job: EmbedJob, dev: Any, *, workers: int, on_progress: Callable[[int, int], None] | None
) -> None:
    """Embed every unfinished shard in this process, on ``dev``."""
    import torch

    done = job.pairs_done()
    if on_progress:
        on_progress(done, job.n)
    todo = job.pending()
    autocast = (
        torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
        if job.precision == "bf16"
        else contextlib.nullcontext()
    )
    for (si, idx), raw in zip(todo, batch_loader(job.read, [t[1] for t in todo], workers, pin=job.pin)):
        with torch.inference_mode(), autocast:
            emb = job.embed(raw, dev)
        job.add(si, idx, raw, emb)
        done += len(idx)
        if on_progress:
            on_progress(done, job.n)
