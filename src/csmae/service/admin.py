"""The state-changing side of the service: a guarded, atomic ``POST /api/reload``.

Guard (every state-changing endpoint): a browser page of another origin can send a "simple"
cross-origin POST (``text/plain``, forms) without a CORS preflight, so such requests are refused
before anything runs: a cross-origin ``Origin`` / ``Sec-Fetch-Site`` is a 403, a body that is not
``application/json`` a 415 (a JSON POST from another origin needs a preflight, which this server
never grants). Reload also needs the admin token (``csmae serve --admin-token`` or
``CSMAE_ADMIN_TOKEN``) as ``Authorization: Bearer TOKEN``; without a configured token it is off.

Swap: the new index (and the model it names) is loaded outside any lock while searches go on; only
the swap of the retriever's parts and the catalogue takes the write side of a readers-writer lock,
which every request handler holds for reading. A request therefore sees the old index or the new
one from its start to its end, never a mix; a failed load leaves the old index serving.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from csmae.errors import redact_uri
from csmae.service.errors import ApiError

logger = logging.getLogger(__name__)

TOKEN_ENV = "CSMAE_ADMIN_TOKEN"


class SwapLock:
    """A readers-writer lock: many requests read at once; a swap waits for them and goes first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting_writers = 0

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()

    def reader(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorate a (sync) request handler to run under the read side (signature kept for FastAPI)."""

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self.reading():
                return fn(*args, **kwargs)

        return run


def _same_origin(origin: str, request: Request) -> bool:
    host = request.headers.get("host", "")
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return bool(parts.scheme in ("http", "https") and parts.netloc and parts.netloc.lower() == host.lower())


def check_state_change(request: Request, *, token: str | None, action: str) -> None:
    """Refuse a state-changing request from another origin, with a non-JSON body, or without the
    admin token (see the module docstring). Raises ApiError 403 / 415 / 401."""
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    foreign = origin is not None and not _same_origin(origin, request)
    if foreign or site not in (None, "same-origin", "none"):
        raise ApiError(403, f"{action} refused: cross-origin request (Origin {str(origin)[:100]!r}, "
                            f"Sec-Fetch-Site {str(site)[:30]!r}); send it from this server's own origin "
                            "or from a non-browser client")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, f"{action} needs Content-Type: application/json (got {media[:60] or 'none'!r})")
    if not token:
        raise ApiError(403, f"{action} is disabled on this server: start `csmae serve` with --admin-token "
                            f"TOKEN (or set {TOKEN_ENV}) and send 'Authorization: Bearer TOKEN'")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, f"{action} needs the admin token: send 'Authorization: Bearer TOKEN' "
                            "(the token given to csmae serve --admin-token)")


def public_message(text: object, paths: Sequence[str | os.PathLike[str] | None] = ()) -> str:
    """A message fit to leave the process: credentials in URIs hidden, the server's own absolute
    folders shown by their names only."""
    msg = redact_uri(text)
    known: set[str] = set()
    for p in paths:
        if p:
            known |= {str(p), os.path.realpath(p), str(Path(p).resolve().parent)}
    for full in sorted(known, key=len, reverse=True):
        if len(full) > 1:
            msg = msg.replace(full, Path(full).name or full)
    return msg


def public_paths(value: Any) -> Any:
    """``value`` (JSON-like) with every absolute path string shown by its last part only and URI
    credentials hidden (what /api/health shows of the server's files)."""
    if isinstance(value, dict):
        return {k: public_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [public_paths(v) for v in value]
    if isinstance(value, str):
        if os.path.isabs(value) and "://" not in value:
            return Path(value).name
        return redact_uri(value)
    return value


def reload_index(retriever: Any, swap: SwapLock, *, prepare: Callable[[Any], Any],
                 apply: Callable[[Any], None], require_checksums: bool) -> dict[str, Any]:
    """Load the retriever's index folder again and swap it in atomically (see the module docstring).

    ``prepare(view)`` runs before the swap, outside the lock, on the new index's search core when
    the retriever offers one (None otherwise): the service builds its catalogue there.
    ``apply(prepared)`` runs under the write lock right after the retriever's parts are swapped.

    Raises:
        ApiError: 400 (the new index cannot be used; still serving the old one), 503 (its
            database does not answer).
    """
    source = getattr(retriever, "source", None) or getattr(getattr(retriever, "index", None), "path", None)
    paths = [source, getattr(retriever, "model_dir", None)]
    try:
        if hasattr(retriever, "prepare_reload"):
            plan = retriever.prepare_reload(require_checksums=require_checksums)
            ready = prepare(getattr(plan, "core", None))
            with swap.writing():
                info = retriever.commit_reload(plan)
                apply(ready)
        elif hasattr(retriever, "reload"):
            with swap.writing():
                info = retriever.reload()
                apply(prepare(None))
        else:
            raise ApiError(400, "this retriever cannot reload")
    except ApiError:
        raise
    except ConnectionError as e:  # e.g. MilvusUnavailable: the index's database does not answer
        logger.warning("reload failed: %s", redact_uri(e))
        raise ApiError(503, "reload failed, still serving the previous index: "
                            f"{public_message(e, paths)}") from None
    except (ValueError, OSError, RuntimeError) as e:
        logger.warning("reload failed: %s", redact_uri(e))
        raise ApiError(400, "reload failed, still serving the previous index: "
                            f"{public_message(e, paths)}") from None
    except Exception as e:  # noqa: BLE001 - a malformed manifest (KeyError, TypeError...): still a 400
        logger.exception("reload failed")
        raise ApiError(400, "reload failed, still serving the previous index: the new index is "
                            f"malformed ({type(e).__name__}: {public_message(e, paths)[:300]})") from None
    logger.info("reloaded %s: %s", Path(str(source)).name if source else "the index", info)
    return dict(info)
