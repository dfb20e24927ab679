"""HTTP API and search page over a retrieval index (``csmae serve``).

``create_app(retriever)`` builds the FastAPI app; see :mod:`csmae.service.app`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServiceSettings", "create_app"]


def __getattr__(name: str) -> Any:  # keep ``import csmae.service`` light (no FastAPI until used)
    if name in __all__:
        from csmae.service import app

        return getattr(app, name)
    raise AttributeError(name)
