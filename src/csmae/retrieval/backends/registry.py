"""Create and load vector backends by name: the one place that knows which backends exist.

:class:`~csmae.retrieval.index.SearchIndex` and ``build_index`` go through these functions, so no
code outside this package branches on the backend. Backends are imported lazily: the Milvus one
needs the optional extra (``pip install 'csmae[milvus]'``) only when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("faiss", "milvus")


def create_backend(
    name: str,
    kind: str,
    *,
    dim: int,
    n_hint: int,
    label_names: list[str],
    train: np.ndarray | None = None,
    store_folder: Path | None = None,
    uri: str | None = None,
    collection: str | None = None,
    name_hint: str = "index",
) -> Any:
    """A new, empty backend ``name`` of index ``kind``.

    Args:
        name: ``"faiss"`` (in-process, default) or ``"milvus"`` (needs ``uri``).
        kind: the backend's index kind (FAISS: exact/hnsw/hnsw-sq8/ivf/ivfpq/factory string;
            Milvus: exact/hnsw/ivf/ivf-sq8/Milvus index type).
        dim: vector dimension; n_hint: expected vectors; label_names: the index's labels.
        train: L2-normalised training sample (FAISS IVF/PQ kinds).
        store_folder: FAISS ivfpq's on-disk vectors.
        uri: Milvus URI (``path.db`` = Lite in-process, ``http://host:19530`` = server).
        collection: Milvus collection name (default: unique per build).
        name_hint: readable part of a generated collection name (e.g. the index folder's name).
    """
    if name == "faiss":
        if uri is not None:
            raise ValueError("--uri is for the milvus backend; the faiss backend lives in the index folder")
        from csmae.retrieval.backends.faiss import FaissBackend

        return FaissBackend.create(kind, dim=dim, n_hint=n_hint, train=train, store_folder=store_folder)
    if name == "milvus":
        if not uri:
            raise ValueError(
                "the milvus backend needs --uri: a path ending .db (Milvus Lite, in this process) or "
                "http://host:19530 (a Milvus server)"
            )
        from csmae.retrieval.backends import milvus

        return milvus.create(
            uri,
            dim=dim,
            label_names=label_names,
            kind=kind,
            n_hint=n_hint,
            collection=collection,
            name_hint=name_hint,
        )
    raise ValueError(f"unknown backend {name!r}; backends are {list(BACKENDS)}")


def load_backend(folder: Path, entry: dict[str, Any], *, params: dict[str, Any], legacy: bool = False) -> Any:
    """The backend an index manifest's ``backend`` entry describes (FAISS when it names none)."""
    name = entry.get("backend", "faiss")
    if name == "faiss":
        from csmae.retrieval.backends.faiss import FaissBackend

        return FaissBackend.load(folder, entry, params=params, legacy=legacy)
    if name == "milvus":
        from csmae.retrieval.backends.milvus import MilvusBackend

        return MilvusBackend.load(folder, entry, params=params)
    raise ValueError(f"{folder}: unknown backend {name!r} in manifest.json; backends are {list(BACKENDS)}")


def discard_backend(backend: Any) -> None:
    """Release what a backend created outside the index folder (a Milvus collection) after a failed
    build; nothing for FAISS."""
    drop = getattr(backend, "drop", None)
    if callable(drop):
        drop()
