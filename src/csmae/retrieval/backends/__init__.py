"""Vector backends behind one protocol (:mod:`.base`): FAISS in-process (default), Milvus (extra)."""

from csmae.retrieval.backends.base import VectorBackend, allowed_rows, check_result

__all__ = ["VectorBackend", "allowed_rows", "check_result"]
