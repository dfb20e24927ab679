"""The user-facing errors of every floor, in one light module (standard library only, no torch).

Each message names the file / patch / field and what is wrong. The modules that raised these first
(``csmae.data.base``, ``csmae.integrity``, ``csmae.training.config``, ...) re-export them, so both
import paths name the same class.
"""

from __future__ import annotations

import os


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
