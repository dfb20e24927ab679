"""A restricted unpickler for the reference implementation's encoded BigEarthNet records.

The records are pickles of third-party pydantic-v1 classes (``bigearthnet_patch_interface.*``)
holding numpy arrays. Pickles from outside are untrusted, so :class:`RestrictedUnpickler` resolves
only:

- classes of ``bigearthnet_patch_interface.*`` -> a :class:`Stub` subclass that records whatever
  state arrives (``__setstate__``), never importing or running third-party code;
- the numpy reconstruction entry points (``_reconstruct``, ``ndarray``, ``dtype``, ``_frombuffer``);
- a couple of harmless builtin constructors (``set``, ``frozenset``) used by older protocols.

Any other global (``os.system``, ``builtins.eval``, ...) is refused with a :class:`DataError` that
names the record and the global, before anything is called.
"""

from __future__ import annotations

import importlib
import io
import pickle
from typing import Any

import numpy as np

from csmae.data.base import DataError

STUB_MODULE_PREFIX = "bigearthnet_patch_interface."


def _numpy_attr(modules: tuple[str, ...], name: str) -> Any:
    for m in modules:
        try:
            return getattr(importlib.import_module(m), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(name)  # pragma: no cover - every supported numpy has one of them


_RECONSTRUCT = _numpy_attr(("numpy._core.multiarray", "numpy.core.multiarray"), "_reconstruct")
_FROMBUFFER = _numpy_attr(("numpy._core.numeric", "numpy.core.numeric"), "_frombuffer")

#: (module, name) -> object for every non-stub global a record may name.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class Stub:
    """Stand-in for a third-party class: keeps the pickled state, runs no foreign code."""

    global_name: str = ""

    def __init__(self, *args: Any, **kwargs: Any):
        self.init_args = args
        self.init_kwargs = kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def fields(self) -> dict[str, Any]:
        """The object's attributes: pydantic-v1 state ``{"__dict__": {...}, ...}`` or a plain dict."""
        state = getattr(self, "state", None)
        if isinstance(state, tuple) and state and isinstance(state[0], dict):
            state = state[0]
        if isinstance(state, dict):
            inner = state.get("__dict__")
            return dict(inner) if isinstance(inner, dict) else dict(state)
        return {}

    def __repr__(self) -> str:
        return f"<Stub {self.global_name} {sorted(self.fields())}>"


_STUBS: dict[str, type[Stub]] = {}


def stub_class(module: str, name: str) -> type[Stub]:
    full = f"{module}.{name}"
    if full not in _STUBS:
        _STUBS[full] = type(name, (Stub,), {"global_name": full, "__module__": __name__})
    return _STUBS[full]


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose :meth:`find_class` only knows the globals above."""

    def __init__(self, file: io.BufferedIOBase, *, key: str, path: str = ""):
        super().__init__(file)
        self.key = key
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(STUB_MODULE_PREFIX) and name.isidentifier():
            return stub_class(module, name)
        obj = ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise DataError(f"pickle names the disallowed global {module}.{name}; refusing to load it",
                            patch=self.key, path=self.path)
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("pickle uses persistent ids; refusing to load it", patch=self.key, path=self.path)


def restricted_loads(data: bytes, *, key: str, path: str = "") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; every failure is a :class:`DataError`."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), key=key, path=path).load()
    except DataError:
        raise
    except Exception as exc:  # truncated/corrupt pickles raise many types
        raise DataError(f"corrupt pickle ({type(exc).__name__}: {exc})", patch=key, path=path) from None
