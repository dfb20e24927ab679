"""Create and load vector backends by name: the one place that knows which engines exist.

Engines are found, not listed: every module of this package that defines ``BACKEND`` (a
:class:`~csmae.retrieval.backends.base.BackendSpec`) is one engine, discovered with :mod:`pkgutil`
on first use. Engine modules import their libraries (faiss, pymilvus) inside functions, so finding
them needs no optional extra. :class:`~csmae.retrieval.index.SearchIndex`, ``build_index``,
``index_grow`` and ``csmae index`` go through these functions and never branch on an engine.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from csmae.retrieval.backends.base import BackendOption, BackendSpec, VectorBackend

__all__ = [
    "backend_names",
    "cli_options",
    "create_backend",
    "default_backend",
    "discard_backend",
    "entry_of",
    "get_spec",
    "load_backend",
    "owned_file",
    "spec_of_entry",
    "specs",
]


@functools.cache
def specs() -> tuple[BackendSpec, ...]:
    """Every registered engine: the default first, then by name."""
    import csmae.retrieval.backends as package

    found: dict[str, BackendSpec] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name in ("base", "registry"):
            continue
        spec = getattr(importlib.import_module(f"{package.__name__}.{info.name}"), "BACKEND", None)
        if isinstance(spec, BackendSpec):
            if spec.name in found:
                raise RuntimeError(f"two vector backends register the name {spec.name!r}")
            found[spec.name] = spec
    defaults = [s for s in found.values() if s.default]
    if len(defaults) != 1:
        raise RuntimeError(f"exactly one vector backend must be the default, found {len(defaults)}")
    return tuple(sorted(found.values(), key=lambda s: (not s.default, s.name)))


def backend_names() -> list[str]:
    """Registered engine names, the default first (``['faiss', 'milvus']``)."""
    return [s.name for s in specs()]


def default_backend() -> str:
    """The engine used when none is named (``--backend``'s default, manifests without one)."""
    return specs()[0].name


def get_spec(name: str) -> BackendSpec:
    """The spec of engine ``name``; unknown names: ``ValueError`` listing the engines."""
    for s in specs():
        if s.name == name:
            return s
    raise ValueError(f"unknown backend {name!r}; backends are {backend_names()}")


def cli_options() -> list[tuple[BackendOption, list[str]]]:
    """Every engine option with CLI help, once per flag, with the engines that declare it."""
    out: dict[str, tuple[BackendOption, list[str]]] = {}
    for s in specs():
        for o in s.options:
            if o.help:
                out.setdefault(o.flag, (o, []))[1].append(s.name)
    return list(out.values())


def create_backend(
    name: str | None,
    kind: str,
    *,
    dim: int,
    n_hint: int,
    label_names: list[str],
    train: np.ndarray | None = None,
    name_hint: str = "index",
    **options: Any,
) -> VectorBackend:
    """A new, empty backend of engine ``name`` (None = the default) and index ``kind``.

    Args:
        name: a registered engine (``backend_names()``).
        kind: the engine's index kind (see its module; FAISS: exact/hnsw/ivf/ivfpq/factory string).
        dim: vector dimension; n_hint: expected vectors; label_names: the index's labels.
        train: L2-normalised training sample (S, D) (kinds that train).
        name_hint: readable part of generated names (e.g. the index folder's name).
        options: engine options (``BackendSpec.options``, e.g. Milvus ``uri`` / ``collection``,
            FAISS ``store_folder``); None = not given. An option of another engine is ignored,
            unless it says where the vectors live (then an error).
    """
    spec = get_spec(name or default_backend())
    given: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if spec.option(key) is not None:
            given[key] = value
            continue
        owners = [s for s in specs() if s.option(key) is not None]
        if not owners:
            raise TypeError(f"unknown backend option {key!r}")
        opt = owners[0].option(key)
        assert opt is not None
        if opt.locates:
            raise ValueError(
                f"{opt.flag} is for the {' / '.join(s.name for s in owners)} backend; "
                f"the {spec.name} backend {spec.home}"
            )
    for o in spec.options:
        if o.required and not given.get(o.name):
            raise ValueError(f"the {spec.name} backend needs {o.flag}: {o.required}")
    return spec.create(
        kind, dim=dim, n_hint=n_hint, label_names=label_names, train=train, name_hint=name_hint, **given
    )


def entry_of(manifest: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """An index manifest's backend entry and whether it is a legacy one (no entry recorded:
    csmae < format 2, rebuilt from the manifest by the default engine)."""
    entry = manifest.get("backend")
    if entry is not None:
        return dict(entry), False
    spec = get_spec(default_backend())
    assert spec.legacy_entry is not None, "the default backend must read legacy manifests"
    return spec.legacy_entry(manifest), True


def spec_of_entry(entry: Mapping[str, Any], folder: Path | None = None) -> BackendSpec:
    """The spec of the engine a manifest entry names (the default when it names none)."""
    name = entry.get("backend", default_backend())
    try:
        return get_spec(name)
    except ValueError:
        where = f"{folder}: " if folder is not None else ""
        raise ValueError(
            f"{where}unknown backend {name!r} in manifest.json; backends are {backend_names()}"
        ) from None


def load_backend(
    folder: Path, entry: dict[str, Any], *, params: dict[str, Any], legacy: bool = False
) -> VectorBackend:
    """The backend an index manifest's ``backend`` entry describes (the default when it names none)."""
    return spec_of_entry(entry, folder).load(folder, entry, params=params, legacy=legacy)


def owned_file(name: str) -> bool:
    """True for a file name some engine may have written into an index folder."""
    return any(s.owns_file(name) for s in specs())


def discard_backend(backend: VectorBackend) -> None:
    """Release what a backend created outside the index folder after a failed build."""
    backend.discard()
