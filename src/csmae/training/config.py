"""Training configuration: one dataclass per YAML section, strict validation, ``--set`` overrides.

A config file has the sections ``model``, ``data``, ``optim``, ``schedule``, ``trainer`` and
``callbacks`` (all optional; defaults are the paper's settings) and an optional ``extends: PATH``
(or a list of paths, relative to the file) whose content is deep-merged underneath. Unknown keys
are errors that name the key and list the valid ones.

String values may use ``${VAR}`` placeholders (environment variables) and ``~``; they are expanded
when the data is opened (:func:`expand_placeholders`), so that a dry run needs no data.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union

import yaml

from csmae.errors import ConfigError as ConfigError

#: ``trainer.precision``: Lightning's values, and ``auto`` (the default): ``bf16-mixed`` where the
#: accelerator runs bf16 matmuls natively, ``32`` elsewhere (:mod:`csmae.models.precision`).
PRECISIONS = ("auto", "32", "bf16-mixed", "16-mixed", "bf16-true", "64")
LR_SCALINGS = ("none", "linear", "sqrt")
SCHEDULES = ("cosine", "constant")


@dataclass
class ModelSection:
    """Which model to train: a preset of ``csmae.list_models()`` plus ModelConfig overrides."""

    name: str = "csmae_sesd_base"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSection:
    """Where the pairs come from and how batches are made.

    ``sources`` are paths for ``csmae.data.open_dataset`` (a prepared store, v1 S2 + S1 roots, a reBEN
    LMDB, ...; relative paths are relative to the working directory); ``tables`` the v1 side tables
    (official splits for v1 folders). ``batch_size`` is per device (the global batch is
    batch_size x devices x nodes x accumulation); ``global_batch_size``, when set, replaces it and
    is split over devices x nodes x accumulation (it must divide). ``drop_last``: drop the
    incomplete last batch of an epoch (default False, as the reference implementation).
    ``split``/``ids`` select the training pairs; ``val_*`` the validation pairs (validation loss,
    pictures, retrieval callback); ``val_split: null`` and no ``val_ids`` disable validation.
    ``device_transforms``: true, false or "auto" (on with a CUDA device): batches travel as stored
    (uint16 native S2 records) and are upsampled, normalised and flipped on the device.
    """

    sources: list[str] = field(default_factory=list)
    tables: str | None = None
    ids: str | list[str] | None = None
    split: str | list[str] | None = "train"
    max_samples: int | None = None
    val_sources: list[str] | None = None
    val_ids: str | list[str] | None = None
    val_split: str | list[str] | None = "val"
    val_max_samples: int | None = 1024
    batch_size: int = 128
    global_batch_size: int | None = None
    drop_last: bool = False
    val_batch_size: int | None = None
    num_workers: int = 8
    hflip: bool = True
    vflip: bool = True
    pin_memory: bool | None = None
    prefetch_factor: int = 4
    persistent_workers: bool = True
    on_error: str = "raise"
    device_transforms: bool | str = "auto"


@dataclass
class OptimSection:
    """AdamW. ``lr`` is for the global batch ``lr_base_batch`` when ``lr_scaling`` is not "none"."""

    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    lr_scaling: str = "none"
    lr_base_batch: int = 256
    no_decay_norm_bias: bool = False
    fused: bool | None = None


@dataclass
class ScheduleSection:
    """Linear warm-up from 0 then cosine to ``min_lr_ratio * lr``; stepped per optimiser step."""

    kind: str = "cosine"
    warmup_epochs: float = 10.0
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0


@dataclass
class TrainerSection:
    """Lightning Trainer settings (and the seed).

    ``mim_per_rank``: compute the MIM (NT-Xent) negatives over each device's own batch only (the
    default, False, gathers the descriptors of all devices: the negatives are the whole global
    batch, as on one device). ``compile``: ``torch.compile`` the encoder and decoder.
    ``precision``: ``auto`` (default) is ``bf16-mixed`` where the accelerator runs bf16 matmuls
    natively (CPUs with AVX512-BF16 or AMX, GPUs from compute capability 8.0) and ``32`` elsewhere
    (on an AVX2-only CPU bf16 is emulated, 8x slower); the run's manifest records the choice.
    ``bf16_weight_copies``: with ``bf16-mixed``, run the training forward on bf16 copies of the
    Linear/Conv weights (fp32 master weights in the optimiser and checkpoints;
    :mod:`csmae.training.weight_copies`).
    """

    max_epochs: int = 150
    max_steps: int = -1
    precision: str = "auto"
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    seed: int = 42
    log_every_n_steps: int = 50
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    check_val_every_n_epoch: int = 1
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    deterministic: bool = False
    matmul_precision: str | None = "high"
    compile: bool = False
    mim_per_rank: bool = False
    enable_progress_bar: bool = True
    bf16_weight_copies: bool = False


@dataclass
class CallbacksSection:
    """Checkpoints, reconstruction pictures and the retrieval callback."""

    checkpoint_every_n_steps: int | None = 1000
    checkpoint_every_n_epochs: int = 1
    keep_every_n_epochs: int | None = None
    recon_pictures: bool = True
    pictures_every_n_epochs: int = 1
    pictures_n_samples: int = 4
    retrieval_every_n_epochs: int = 0
    retrieval_max_samples: int = 2000
    retrieval_ks: list[int] = field(default_factory=lambda: [5, 10])


@dataclass
class FitConfig:
    """A whole training config."""

    description: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    callbacks: CallbacksSection = field(default_factory=CallbacksSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


# ------------------------------------------------------------------------------------- loading
def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config file, resolving ``extends`` (paths relative to the file) by deep merge."""
    path = Path(path).expanduser().resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'extends' cycle through {[str(p) for p in _seen]}")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(raw).__name__}")
    parents = raw.pop("extends", None) or []
    if isinstance(parents, str):
        parents = [parents]
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = deep_merge(merged, load_yaml(path.parent / parent, _seen + (path,)))
    return deep_merge(merged, raw)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``; mappings merge recursively, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML: ``3``, ``1e-4``, ``[a, b]``, ``null``)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = node[p]
        try:
            node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> FitConfig:
    """Load, merge overrides and validate a config (no data and no model are touched)."""
    raw = load_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    return from_dict(raw, source=str(path) if path else "<defaults>")


# ---------------------------------------------------------------------------------- validation
def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against a type annotation, converting ints to floats where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _check_value(value, arg, where)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is type(None):
        if value is None:
            return None
    elif tp is Any:
        return value
    elif origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, (list, tuple)):
            return [_check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. precision: 32
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _section(cls: Any, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    unknown = [k for k in raw if k not in valid]
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(f'{where}.{k}' for k in unknown)}; "
            f"valid keys in '{where}': {', '.join(valid)}"
        )
    kwargs = {}
    for k, v in raw.items():
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = _section(tp, v, f"{where}.{k}")
        else:
            kwargs[k] = _check_value(v, tp, f"{where}.{k}")
    return cls(**kwargs)


def from_dict(raw: dict[str, Any], *, source: str = "<dict>") -> FitConfig:
    """Validate a raw mapping into a :class:`FitConfig` (strict: unknown keys are errors)."""
    valid = [f.name for f in fields(FitConfig)]
    unknown = [k for k in raw if k not in valid]
    if unknown:
        raise ConfigError(
            f"{source}: unknown config section(s) {unknown}; valid sections: {', '.join(valid)}"
        )
    hints = typing.get_type_hints(FitConfig)
    kwargs: dict[str, Any] = {}
    for k, v in raw.items():
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = _section(tp, v, k)
        else:
            kwargs[k] = _check_value(v, tp, k)
    cfg = FitConfig(**kwargs)
    check_values(cfg)
    return cfg


def _choice(value: Any, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")


def check_values(cfg: FitConfig) -> None:
    """Range and choice checks that types alone do not express."""
    d, o, s, t, c = cfg.data, cfg.optim, cfg.schedule, cfg.trainer, cfg.callbacks
    _choice(t.precision, PRECISIONS, "trainer.precision")
    if t.bf16_weight_copies and t.precision not in ("bf16-mixed", "auto"):
        raise ConfigError(
            f"trainer.bf16_weight_copies=true needs trainer.precision 'bf16-mixed' (got {t.precision!r}): "
            "the copies are the bf16 operands autocast would make; set trainer.bf16_weight_copies=false"
        )
    if t.bf16_weight_copies and t.compile:
        raise ConfigError(
            "trainer.bf16_weight_copies=true and trainer.compile=true are not supported together "
            "(the copies are swapped into the modules at every step); set one of them to false"
        )
    _choice(o.lr_scaling, LR_SCALINGS, "optim.lr_scaling")
    _choice(s.kind, SCHEDULES, "schedule.kind")
    _choice(d.on_error, ("raise", "skip"), "data.on_error")
    if d.device_transforms not in (True, False, "auto"):
        raise ConfigError(
            f"data.device_transforms: {d.device_transforms!r} is not one of [true, false, 'auto']"
        )
    positive = {
        "data.batch_size": d.batch_size,
        "optim.lr": o.lr,
        "optim.lr_base_batch": o.lr_base_batch,
        "trainer.num_nodes": t.num_nodes,
        "trainer.log_every_n_steps": t.log_every_n_steps,
        "trainer.accumulate_grad_batches": t.accumulate_grad_batches,
        "trainer.check_val_every_n_epoch": t.check_val_every_n_epoch,
        "callbacks.pictures_n_samples": c.pictures_n_samples,
        "callbacks.retrieval_max_samples": c.retrieval_max_samples,
    }
    for where, v in positive.items():
        if v <= 0:
            raise ConfigError(f"{where} must be > 0, got {v}")
    non_negative = {
        "data.num_workers": d.num_workers,
        "optim.weight_decay": o.weight_decay,
        "optim.eps": o.eps,
        "schedule.warmup_epochs": s.warmup_epochs,
        "trainer.max_epochs": t.max_epochs,
        "callbacks.checkpoint_every_n_epochs": c.checkpoint_every_n_epochs,
        "callbacks.pictures_every_n_epochs": c.pictures_every_n_epochs,
        "callbacks.retrieval_every_n_epochs": c.retrieval_every_n_epochs,
    }
    for where, v in non_negative.items():
        if v < 0:
            raise ConfigError(f"{where} must be >= 0, got {v}")
    optional: dict[str, int | None] = {
        "data.max_samples": d.max_samples,
        "data.val_max_samples": d.val_max_samples,
        "data.val_batch_size": d.val_batch_size,
        "data.global_batch_size": d.global_batch_size,
        "callbacks.checkpoint_every_n_steps": c.checkpoint_every_n_steps,
        "callbacks.keep_every_n_epochs": c.keep_every_n_epochs,
        "schedule.warmup_steps": s.warmup_steps,
    }
    for where, opt in optional.items():
        if opt is not None and opt < (0 if where == "schedule.warmup_steps" else 1):
            raise ConfigError(f"{where} must be null or >= 1, got {opt}")
    if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
        raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {o.betas}")
    if not 0.0 <= s.min_lr_ratio <= 1.0:
        raise ConfigError(f"schedule.min_lr_ratio must be in [0, 1], got {s.min_lr_ratio}")
    if t.max_epochs == 0 and t.max_steps <= 0:
        raise ConfigError("trainer.max_epochs is 0 and trainer.max_steps is not set: nothing to train")
    if not c.retrieval_ks or min(c.retrieval_ks) < 1:
        raise ConfigError(f"callbacks.retrieval_ks must be positive integers, got {c.retrieval_ks}")
    if d.num_workers == 0 and d.persistent_workers:
        d.persistent_workers = False  # meaningless without workers (Lightning would refuse it)
    if not cfg.model.name:
        raise ConfigError("model.name must name a model preset (see `csmae.list_models()`)")


# ------------------------------------------------------------------------------- placeholders
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_placeholders(value: Any, where: str) -> Any:
    """Expand ``${VAR}`` and ``~`` in a string or list of strings; unset variables are errors."""
    if value is None:
        return None
    if isinstance(value, list):
        return [expand_placeholders(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise ConfigError(
                f"{where} = {value!r} uses ${{{name}}}, which is not set: export {name}=... "
                f"or override the key with --set {where.split('[')[0]}=..."
            )
        return os.environ[name]

    return os.path.expanduser(_VAR.sub(sub, value))


def has_placeholders(value: Any) -> bool:
    if isinstance(value, list):
        return any(has_placeholders(v) for v in value)
    return isinstance(value, str) and bool(_VAR.search(value))
