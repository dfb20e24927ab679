"""Compute descriptors of a dataset with a saved model and write an embeddings folder.

Resumable: work happens in ``<out>.partial/`` (shards of ``shard_pairs`` pairs, each written
atomically, plus ``plan.json``); a rerun with the same model, data and options keeps the finished
shards and continues. The folder is moved to ``<out>`` only when complete (with manifest.json).
Single process (CPU or one GPU); multi-GPU embedding is not implemented.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from csmae.retrieval.artifacts import base_manifest, replace_folder, sha256_file, write_json_atomic
from csmae.retrieval.embeddings import KIND, write_shard
from csmae.sensors import Sensor

log = logging.getLogger(__name__)


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


def _reader(ds: Any, sensors: list[str], perms: dict[str, np.ndarray | None]) -> Callable[[np.ndarray], dict]:
    """indices -> {sensor: raw (B, C, H, W) in the model's band order, labels, id}."""

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

    return fast if hasattr(ds, "get_batch") else slow


def _batches(read: Callable[[np.ndarray], dict], batches: list[np.ndarray], workers: int) -> Any:
    """Read batches in order, in this process or in DataLoader worker processes."""
    if workers <= 0:
        return (read(idx) for idx in batches)
    from torch.utils.data import DataLoader, Dataset

    class _Batches(Dataset):
        def __len__(self) -> int:
            return len(batches)

        def __getitem__(self, i: int) -> dict:
            return read(batches[i])

    return iter(DataLoader(_Batches(), batch_size=None, num_workers=workers, prefetch_factor=4))


def _write(path: Path, acc: dict[str, list[Any]], want: list[str], splits: list[Any]) -> None:
    lab = np.concatenate(acc["labels"])
    m = len(lab)
    # interleave rows pair by pair: (pair0, s1), (pair0, s2), (pair1, s1), ...
    vec = np.stack([np.concatenate(acc[s]) for s in want], axis=1).reshape(m * len(want), -1)
    write_shard(
        path,
        ids=[str(i) for i in acc["ids"] for _ in want],
        sensors=want * m,
        splits=[sp for sp in splits for _ in want],
        labels=np.repeat(lab, len(want), axis=0),
        vectors=vec,
    )


def embed_dataset(
    model_dir: str | os.PathLike[str],
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    split: str | Sequence[str] | None = None,
    sensors: Sequence[str] | None = None,
    batch_size: int = 64,
    precision: str = "bf16",
    shard_pairs: int = 4096,
    device: str = "auto",
    workers: int = 0,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    dataset: Any = None,
) -> Path:
    """Embed every pair (and each requested sensor) of a dataset; returns the embeddings folder.

    Args:
        model_dir: folder written by ``save_pretrained``.
        sources: dataset source path(s) for :func:`csmae.data.open_dataset`.
        out: output folder (must not exist unless ``overwrite``; replaced only when complete).
        split: keep only pairs of this split / these splits.
        sensors: sensors to embed (default: those of the model).
        batch_size: pairs per forward pass.
        precision: ``"bf16"`` (autocast) or ``"fp32"``.
        shard_pairs: pairs per Parquet shard (the unit of resumption).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``...
        workers: DataLoader worker processes reading batches (0 = read in this process).
        on_progress: called with (pairs done, total pairs) after each batch.
        dataset: an already opened dataset to use instead of opening ``sources``.
    """
    import torch

    from csmae.data import open_dataset
    from csmae.models import from_pretrained, normalize_batch

    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    model = from_pretrained(Path(model_dir), map_location=dev)
    model_sensors: dict[str, Sensor] = dict(model.sensors)
    want = list(sensors) if sensors else list(model_sensors)
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
    info = model_info(model_dir, model)
    ids = list(ds.ids)
    splits = list(ds.splits())
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
    if work.exists():
        try:
            old = json.loads((work / "plan.json").read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != plan:
            log.warning("%s belongs to another run (different model/data/options): starting over", work)
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(work / "plan.json", plan)
    read = _reader(ds, want, perms)
    n_shards = -(-n // shard_pairs)
    shards: list[dict[str, Any]] = []
    done = 0
    autocast = (
        torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    todo: list[tuple[int, np.ndarray]] = []  # (shard, pair indices) of every batch still to compute
    for si in range(n_shards):
        name = f"part-{si:05d}.parquet"
        lo, hi = si * shard_pairs, min(n, (si + 1) * shard_pairs)
        shards.append({"file": name, "pairs": hi - lo, "rows": (hi - lo) * len(want)})
        if (work / name).exists():
            done += hi - lo
        else:
            todo += [(si, np.arange(b, min(hi, b + batch_size))) for b in range(lo, hi, batch_size)]
    if on_progress:
        on_progress(done, n)
    acc: dict[str, list[Any]] = {}
    for (si, idx), raw in zip(todo, _batches(read, [t[1] for t in todo], workers)):
        if list(raw["id"]) != ids[idx[0] : idx[-1] + 1]:
            raise RuntimeError("dataset returned samples out of order")
        batch = {
            s: t.to(dev)
            for s, t in normalize_batch(
                {s: raw[s] for s in want}, {s: model_sensors[s] for s in want}
            ).items()
        }
        with torch.inference_mode(), autocast:
            emb = model.embed(batch)
        for s in want:
            acc.setdefault(s, []).append(emb[s].float().cpu().numpy())
        acc.setdefault("labels", []).append(np.asarray(raw["labels"], dtype=bool))
        acc.setdefault("ids", []).extend(raw["id"])
        done += len(idx)
        if on_progress:
            on_progress(done, n)
        lo, hi = si * shard_pairs, min(n, (si + 1) * shard_pairs)
        if idx[-1] + 1 == hi:  # shard complete
            _write(work / shards[si]["file"], acc, want, splits[lo:hi])
            log.info("wrote %s (%d pairs)", shards[si]["file"], hi - lo)
            acc = {}
    manifest = base_manifest(
        KIND,
        model=info,
        dim=info["dim"],
        sensors={s: model_sensors[s].to_dict() for s in want},
        normalisation="per-band (x - mean) / std with the sensors' mean/std",
        dataset={"sources": plan["sources"], "split": split, "kind": getattr(ds, "kind", ""), "pairs": n},
        label_names=list(getattr(ds, "label_names", [])),
        precision=precision,
        count=n * len(want),
        shards=shards,
    )
    write_json_atomic(work / "manifest.json", manifest)
    (work / "plan.json").unlink()
    replace_folder(work, out)
    return out
