"""The user-facing errors of every floor, in one light module (standard library only, no torch).

Each message names the file / patch / field and what is wrong. The modules that raised these first
(``csmae.data.base``, ``csmae.integrity``, ``csmae.training.config``, ...) re-export them, so both
import paths name the same class.
"""

from __future__ import annotations

import logging
import os
import re


class DataError(ValueError):
    """Bad input data. The message names the file or source, the patch and what is wrong."""

    def __init__(self, message: str, *, patch: str | None = None, path: str | None = None):
        parts = []
        if path:
            parts.append(str(path))
        if patch:
            parts.append(f"patch {patch}")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.patch = patch
        self.path = path
        self.reason = message


class TooLargeError(DataError):
    """Input whose decoded size would exceed a limit (a decompression bomb, an oversized shape)."""


class IntegrityError(ValueError):
    """An artefact file does not match its manifest (damaged, truncated or replaced)."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None):
        super().__init__(message)
        self.path = str(path) if path is not None else None


class ServiceUnavailable(ConnectionError, RuntimeError):
    """A server the archive lives on (a vector database) does not answer now; the message names it
    (passwords redacted). The HTTP service answers 503; a later request may succeed."""


class ConfigError(ValueError):
    """An invalid training config; the message names the key and what was expected."""


class UnknownLabelError(ValueError):
    """A label name that belongs to neither nomenclature."""


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/@\s:'\"]*)(:[^/@\s'\"]*)?@")


def redact_uri(text: object) -> str:
    """``text`` with the credentials of every URI in it hidden: ``http://root:pw@host`` ->
    ``http://root:***@host`` (a user name alone, often a token: ``***@``).

    Every message or log line that includes a URI given by a user (a Milvus server, ...) goes
    through this, so a password never leaves the process.
    """

    def hide(m: re.Match[str]) -> str:
        return f"{m.group(1)}{m.group(2)}:***@" if m.group(3) else f"{m.group(1)}***@"

    return _USERINFO.sub(hide, str(text))


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record's message through :func:`redact_uri`."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact_uri(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact_uri(logging.Formatter().formatException(record.exc_info))
        return True
