"""Milvus errors, URI redaction, connection-failure mapping, and Milvus Lite housekeeping.

No pymilvus import at module level: the package imports without the ``[milvus]`` extra.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from csmae.errors import ServiceUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: what a Milvus Lite ``.db`` folder holds (milvus-lite 3.x)
LITE_ENTRIES = frozenset({"LOCK", "collections", "databases", ".database-staging"})
#: words in a client error that mean the server is not reachable (not a refused request)
_GONE = re.compile(
    r"unavailable|connect|deadline|timed? ?out|socket closed|connection reset|closed the connection|"
    r"failed to connect|not ready|broken pipe|channel|ended recv|collection not loaded",
    re.I,
)


class MilvusUnavailable(ServiceUnavailable):
    """Milvus at a URI does not answer / a Lite .db cannot be opened (a RuntimeError too, so the
    CLI reports it as a one-line error; the service maps it to a JSON 503)."""


class MissingExtra(ImportError, RuntimeError):
    """The optional ``[milvus]`` extra is not installed (message says what to install)."""


class NotMilvusLite(ValueError):
    """A path named like a Milvus Lite database that is something else (csmae never touches it)."""


def redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (``http://user:***@host:19530``)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(uri))


def _msg(e: BaseException) -> str:
    m = getattr(e, "message", None) or str(e)
    return str(m).splitlines()[0][:300] if str(m) else type(e).__name__


def is_unreachable(e: BaseException) -> bool:
    """True for a client error that means the server went away (not a refused request)."""
    try:
        import grpc

        if isinstance(e, grpc.RpcError) and hasattr(e, "code"):
            return e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    except ImportError:  # pragma: no cover - grpc comes with pymilvus
        pass
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    return bool(_GONE.search(_msg(e)))


def timed_out(e: BaseException) -> bool:
    """True for a call that reached the server and ran past its deadline (DEADLINE_EXCEEDED): the
    server is slow, not gone (a server that is not there fails with UNAVAILABLE)."""
    try:
        import grpc

        if isinstance(e, grpc.RpcError) and hasattr(e, "code"):
            return bool(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
    except ImportError:  # pragma: no cover - grpc comes with pymilvus
        pass
    # the server's own deadline ("syncTimestamp Failed:context deadline exceeded", "proxy
    # TaskCondition context Done") comes as a MilvusException, also wrapped by pymilvus's "Retry
    # timeout"; a server that is down says UNAVAILABLE / "failed to connect" instead
    text = str(e)
    return bool(re.search(r"deadline[ _]exceeded|context done|retry timeout", text, re.I)) and not re.search(
        r"unavailable|failed to connect|connection refused|connect failed", text, re.I
    )


@contextmanager
def guarded(uri: str, what: str) -> Iterator[None]:
    """Map a client error meaning "the server is not there" to :class:`MilvusUnavailable` naming
    the URI (password redacted); other errors pass unchanged."""
    try:
        yield
    except MilvusUnavailable:
        raise
    except Exception as e:
        if is_unreachable(e):
            raise MilvusUnavailable(
                f"Milvus at {redact(uri)} is unavailable ({what}: {redact(_msg(e))}); is the server "
                "running? csmae retries on the next request"
            ) from None
        raise


def call(uri: str, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with guarded(uri, what):
        return fn(*args, **kwargs)


def check_lite_path(path: Path) -> None:
    """Refuse an existing ``path`` that is not a Milvus Lite database folder (an SQLite file named
    ``x.db``, a folder of the user's files): csmae never opens, changes or deletes it."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        what = "a symbolic link" if path.is_symlink() else "a file"
        if path.is_file():
            with open(path, "rb") as f:
                head = f.read(16)
            if head.startswith(b"SQLite format 3"):
                what = "an SQLite database file"
        raise NotMilvusLite(
            f"{path} exists and is {what}, not a Milvus Lite database (a folder); csmae will not "
            "touch it: choose another --uri path"
        )
    names = {p.name for p in path.iterdir()}
    if names and not (names <= LITE_ENTRIES and names & {"collections", "databases"}):
        shown = sorted(names - LITE_ENTRIES)[:5] or sorted(names)[:5]
        raise NotMilvusLite(
            f"{path} exists and is a folder that is not a Milvus Lite database (it holds {shown}); "
            "csmae will not touch it: choose another --uri path"
        )


_silenced = False


def silence_lite_grpc() -> None:
    """Milvus Lite answers some gRPC calls pymilvus makes with UNIMPLEMENTED, which grpc's server
    logs as a "Method not implemented!" traceback on every command: keep those loggers quiet."""
    global _silenced
    if _silenced:
        return
    _silenced = True

    class _NotImplemented(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += str(record.exc_info[1])
            return "Method not implemented" not in text and "UNIMPLEMENTED" not in text

    for name in ("grpc", "grpc._server", "grpc._channel", "pymilvus", "milvus_lite"):
        logging.getLogger(name).addFilter(_NotImplemented())
