"""The Lightning DataModule: paired datasets -> normalised, flipped batches, whole batch per worker.

A worker receives a :class:`~csmae.training.sampler.BatchRequest` and returns a finished batch:
``{sensor: float32 (B, C, 120, 120) normalised, "labels": bool (B, 19), "id": [...]}``. Datasets with a
``get_batch`` (the prepared store) are read in one call per batch; others sample by sample.
Horizontal/vertical flips are drawn per pair from its key (:mod:`csmae.training.sample_rng`, a
function of the pair's place in the global batch) and applied to every sensor of the pair alike
(keeps them co-registered). The batch also carries ``"key"`` (int64 (B,), the per-sample keys the
training step draws the mask noise from) and ``"global_n"`` (the size of the whole global batch).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from csmae.models.batch import normalize_
from csmae.sensors import IMAGE_SIZE, Sensor
from csmae.training.config import ConfigError, DataSection, expand_placeholders
from csmae.training.sample_rng import VAL_STREAM, flip_draws, keys_to_tensor
from csmae.training.sampler import BatchRequest, ResumableBatchSampler, ResumableLoader, batches_per_epoch

log = logging.getLogger(__name__)


def _normalize(raw: Mapping[str, Any], sensors: Mapping[str, Sensor]) -> dict[str, Tensor]:
    """Per-band standardisation with the model's sensor specs (``csmae.models.normalize_batch``)."""
    from csmae.models import normalize_batch

    return normalize_batch({s: raw[s] for s in sensors}, sensors)


class BatchDataset:
    """Map-style dataset whose items are whole batches (indexed by :class:`BatchRequest`).

    Args:
        dataset: a PairedDataset.
        sensors: the model's sensors (band order and statistics); each must be in the dataset.
        positions: dataset indices this view exposes (None: all).
        hflip, vflip: random flips with probability 0.5 each (same flip for all sensors of a pair).
    """

    def __init__(
        self,
        dataset: Any,
        sensors: Mapping[str, Sensor],
        *,
        positions: Sequence[int] | None = None,
        hflip: bool = False,
        vflip: bool = False,
    ):
        self.dataset = dataset
        self.sensors = dict(sensors)
        self.positions = (
            np.arange(len(dataset)) if positions is None else np.asarray(positions, dtype=np.int64)
        )
        self.hflip, self.vflip = hflip, vflip
        self._reorder = {s: _band_order(dataset, s, self.sensors[s]) for s in self.sensors}

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def ids(self) -> list[str]:
        all_ids = self.dataset.ids
        return [all_ids[i] for i in self.positions]

    def raw_batch(
        self, positions: Sequence[int], *, into: Mapping[str, np.ndarray] | None = None
    ) -> dict[str, Any]:
        """Raw (un-normalised) arrays of the model's sensors, labels and ids.

        ``into``: float32 (B, C, H, W) arrays per sensor that a prepared store fills directly
        (sensors whose band order needs no change); the returned arrays are then those arrays.
        """
        idx = self.positions[np.asarray(positions, dtype=np.int64)]
        if hasattr(self.dataset, "get_batch"):
            direct = {s: a for s, a in (into or {}).items() if self._reorder.get(s) is None}
            b = self.dataset.get_batch(idx, into=direct) if direct else self.dataset.get_batch(idx)
            raw = {s: b[s] for s in self.sensors}
            labels, ids = np.asarray(b["labels"], dtype=bool), list(b["id"])
        else:
            samples = [self.dataset[int(i)] for i in idx]
            raw = {s: np.stack([smp[s] for smp in samples]) for s in self.sensors}
            labels = np.stack([np.asarray(smp["labels"], dtype=bool) for smp in samples])
            ids = [smp["id"] for smp in samples]
        for s, order in self._reorder.items():
            if order is not None:
                raw[s] = raw[s][:, order]
        return {**raw, "labels": labels, "id": ids}

    def __getitem__(self, request: BatchRequest) -> dict[str, Any]:
        """A normalised, augmented batch, assembled in place in one buffer per sensor.

        Each buffer is filled by the store (or copied into once), normalised and flipped in place,
        and lives in shared memory inside a DataLoader worker, so the batch reaches the training
        process without another copy: a few passes over the pixels instead of ~8 with fresh
        tensors (see bench/bench_loader.py).
        """
        n = len(request.positions)
        in_worker = torch.utils.data.get_worker_info() is not None
        bufs = {}
        for s, spec in self.sensors.items():
            t = torch.empty(n, spec.num_channels, IMAGE_SIZE, IMAGE_SIZE)  # (B, C, H, W) float32
            bufs[s] = t.share_memory_() if in_worker else t
        raw = self.raw_batch(request.positions, into={s: t.numpy() for s, t in bufs.items()})
        batch: dict[str, Any] = {}
        for s, spec in self.sensors.items():
            x = bufs[s]
            if not np.may_share_memory(raw[s], x.numpy()):  # not filled in place by the store
                x.numpy()[...] = _checked(raw[s], spec)
            batch[s] = normalize_(x, spec)
        if self.hflip or self.vflip:
            flips = flip_draws(request.keys)  # (B, 2): same draw for every sensor
            for s in self.sensors:
                x = batch[s]
                for axis, (on, dim) in enumerate(((self.hflip, -1), (self.vflip, -2))):
                    rows = flips[:, axis].nonzero().flatten()  # samples to flip along `dim`
                    if on and len(rows):
                        x[rows] = x[rows].flip(dim)
        batch["labels"] = torch.from_numpy(raw["labels"])
        batch["id"] = raw["id"]
        batch["key"] = keys_to_tensor(request.keys)  # (B,) int64
        batch["global_n"] = int(request.global_n)
        return batch


def _checked(x: np.ndarray, spec: Sensor) -> np.ndarray:
    """A raw (B, C, H, W) batch of ``spec``'s bands, or a clear error."""
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1:] != (spec.num_channels, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"{spec.name}: expected raw batches of shape (B, {spec.num_channels}, {IMAGE_SIZE}, "
            f"{IMAGE_SIZE}) in band order {list(spec.bands)}, got {x.shape}"
        )
    return x


def _band_order(dataset: Any, name: str, want: Sensor) -> np.ndarray | None:
    """Channel permutation from the dataset's band order to the model's (None when equal)."""
    have = dataset.sensors.get(name)
    if have is None:
        raise ValueError(
            f"data source {getattr(dataset, 'source', '')!r} has sensor(s) {sorted(dataset.sensors)} but the "
            f"model needs {name!r}: use a source with {name.upper()} data or a single-sensor model"
        )
    if tuple(have.bands) == tuple(want.bands):
        return None
    missing = [b for b in want.bands if b not in have.bands]
    if missing:
        raise ValueError(
            f"data source {dataset.source!r}: {name} has bands {list(have.bands)}, the model "
            f"needs {list(want.bands)} (missing {missing})"
        )
    return np.array([have.index(b) for b in want.bands])


def open_pairs(
    sources: Sequence[str],
    *,
    sensors: Mapping[str, Sensor],
    split: Any,
    ids: Any,
    on_error: str,
    where: str,
    tables: str | None = None,
) -> Any:
    """``csmae.data.open_dataset`` with the model's sensors and clear errors for missing paths."""
    from csmae.data import open_dataset

    if not sources:
        raise ValueError(
            f"{where}.sources is empty: give the data folder(s), a prepared store or "
            f"--set {where}.sources=[PATH, ...]"
        )
    paths = expand_placeholders(list(sources), f"{where}.sources")
    for i, p in enumerate(paths):
        if not Path(p).exists():
            raise FileNotFoundError(f"{where}.sources[{i}] = {p!r} does not exist")
    ids = expand_placeholders(ids, f"{where}.ids")
    if isinstance(ids, str) and not Path(ids).is_file():
        raise FileNotFoundError(f"{where} ids file {ids!r} does not exist (make it with `csmae subset`)")
    tables = expand_placeholders(tables, "data.tables")
    if tables is not None and not Path(tables).exists():
        raise FileNotFoundError(f"data.tables = {tables!r} does not exist")
    s2 = sensors.get("s2")
    return open_dataset(
        *paths,
        sensors=tuple(sensors),
        s2_bands=list(s2.bands) if s2 else None,
        tables=tables,
        split=split,
        ids=ids,
        on_error=on_error,
    )


class PairDataModule(pl.LightningDataModule):
    """Train/val loaders of paired batches for a model's sensors.

    Args:
        cfg: the ``data`` config section.
        sensors: ``model.sensors`` (which sensors, band order, normalisation).
        seed: base seed of the data order and flips.
    """

    def __init__(self, cfg: DataSection, sensors: Mapping[str, Sensor], *, seed: int):
        super().__init__()
        self.cfg = cfg
        self.sensors = dict(sensors)
        self.seed = seed
        self.batch_size = cfg.batch_size  # per rank; resolved from data.global_batch_size in setup()
        self.train_set: BatchDataset | None = None
        self.val_set: BatchDataset | None = None
        self._train_loader: ResumableLoader | None = None
        self._pending_position: dict[str, int] | None = None

    @property
    def has_val(self) -> bool:
        return self.cfg.val_split is not None or self.cfg.val_ids is not None

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def resolve_batch_size(self) -> int:
        """The per-rank batch: ``data.batch_size``, or ``data.global_batch_size`` split over ranks.

        Raises:
            ConfigError: the global batch does not divide over ranks x gradient accumulation.
        """
        c = self.cfg
        if c.global_batch_size is None:
            self.batch_size = c.batch_size
            return self.batch_size
        _, world = self._world()
        accumulate = self.trainer.accumulate_grad_batches if self.trainer is not None else 1
        parts = world * accumulate
        if c.global_batch_size % parts:
            raise ConfigError(
                f"data.global_batch_size {c.global_batch_size} does not divide over {world} device(s) x "
                f"{accumulate} accumulated batch(es) = {parts}: use a multiple of {parts} or other devices"
            )
        self.batch_size = c.global_batch_size // parts
        return self.batch_size

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        c = self.cfg
        bs = self.resolve_batch_size()
        train = open_pairs(
            c.sources,
            sensors=self.sensors,
            split=c.split,
            ids=c.ids,
            on_error=c.on_error,
            where="data",
            tables=c.tables,
        )
        n = len(train) if c.max_samples is None else min(len(train), c.max_samples)
        self.train_set = BatchDataset(train, self.sensors, positions=range(n), hflip=c.hflip, vflip=c.vflip)
        _, world = self._world()
        if n < bs * world:
            raise ValueError(
                f"data.batch_size {bs} x {world} device(s) is larger than the {n} training pairs "
                f"of {train!r}: lower data.batch_size or use more data"
            )
        log.info("training on %d pairs from %r", n, train)
        if self.has_val:
            val = open_pairs(
                c.val_sources or c.sources,
                sensors=self.sensors,
                split=c.val_split,
                ids=c.val_ids,
                on_error=c.on_error,
                where="data.val",
                tables=c.tables,
            )
            nv = len(val) if c.val_max_samples is None else min(len(val), c.val_max_samples)
            self.val_set = BatchDataset(val, self.sensors, positions=range(nv))
            if nv == 0:
                raise ValueError(
                    f"no validation pairs in {val!r} (data.val_split={c.val_split!r}); "
                    "set data.val_split: null to train without validation"
                )

    def _loader_kwargs(self) -> dict[str, Any]:
        c = self.cfg
        pin = c.pin_memory if c.pin_memory is not None else torch.cuda.is_available()
        kw: dict[str, Any] = {"num_workers": c.num_workers, "pin_memory": pin, "collate_fn": _identity}
        if c.num_workers > 0:
            kw.update(prefetch_factor=c.prefetch_factor, persistent_workers=c.persistent_workers)
        return kw

    def _progress(self) -> tuple[int, int]:
        """(batches the training loop consumed this epoch, batches per epoch) for checkpoints."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        done = getattr(trainer.fit_loop.epoch_loop.batch_progress.current, "processed", 0)
        return int(done), int(trainer.num_training_batches)

    def _epoch(self) -> int:
        """The training loop's current epoch (the one a new train iterator serves)."""
        return int(self.trainer.current_epoch) if self.trainer is not None else 0

    def batches_per_epoch(self) -> int:
        """Training batches per epoch on each rank (before ``limit_train_batches``)."""
        assert self.train_set is not None, "setup() first"
        return batches_per_epoch(
            len(self.train_set), self.batch_size, self._world()[1], drop_last=self.cfg.drop_last
        )

    def train_dataloader(self) -> ResumableLoader:
        assert self.train_set is not None, "setup() first"
        rank, world = self._world()
        sampler = ResumableBatchSampler(
            len(self.train_set),
            self.batch_size,
            seed=self.seed,
            shuffle=True,
            drop_last=self.cfg.drop_last,
            rank=rank,
            world_size=world,
        )
        self._train_loader = ResumableLoader(
            self.train_set,
            batch_sampler=sampler,
            progress=self._progress,
            epoch=self._epoch,
            **self._loader_kwargs(),
        )
        if self._pending_position is not None:
            self._train_loader.load_state_dict(self._pending_position)
            self._pending_position = None
        return self._train_loader

    # The data position is saved twice: by Lightning with the (stateful) train loader and here, with
    # the DataModule. Lightning restores the DataModule before it builds any loader, whatever the
    # strategy, so this copy is the one that reliably reaches the sampler on resume.
    def state_dict(self) -> dict[str, int]:
        return self._train_loader.state_dict() if self._train_loader is not None else {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not state:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(state)
        else:
            self._pending_position = dict(state)

    def val_dataloader(self) -> Any:
        if self.val_set is None:
            return []
        rank, world = self._world()
        bs = self.cfg.val_batch_size or self.batch_size
        bs = min(bs, max(1, len(self.val_set) // world))
        sampler = ResumableBatchSampler(
            len(self.val_set),
            bs,
            seed=self.seed,
            shuffle=False,
            drop_last=False,
            rank=rank,
            world_size=world,
            stream=VAL_STREAM,
            fixed_epoch=0,  # the same validation masks every epoch
        )
        kwargs = self._loader_kwargs()
        return DataLoader(self.val_set, sampler=sampler, batch_size=None, **kwargs)  # type: ignore[arg-type]


def _identity(batch: Any) -> Any:
    return batch


def model_inputs(batch: Mapping[str, Any], sensors: Sequence[str]) -> dict[str, Tensor]:
    """The sensor tensors of a batch (what the model's forward takes)."""
    return {s: batch[s] for s in sensors}
