"""Vector engines behind one protocol (:mod:`.base`), found by the registry (:mod:`.registry`):
FAISS in-process (default), Milvus (optional extra). A new engine is one module defining ``BACKEND``."""

from csmae.retrieval.backends.base import (
    BackendOption,
    BackendSpec,
    VectorBackend,
    allowed_rows,
    check_result,
)

__all__ = ["BackendOption", "BackendSpec", "VectorBackend", "allowed_rows", "check_result"]
