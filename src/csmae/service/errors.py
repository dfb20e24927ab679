"""Errors as JSON: every failure a client can cause is a 4xx with ``{"detail": message}``.

A database that does not answer (a ``ConnectionError``, e.g. :class:`~csmae.errors.ServiceUnavailable`:
a Milvus server gone away) is a 503 naming its URI without credentials. Unexpected exceptions become a
bare 500
``{"detail": "internal error"}`` (logged with the traceback, never sent to the client).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from csmae.errors import redact_uri
from csmae.service.uploads import UploadError

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A client error with its HTTP status and a message that says what to change."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _location(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body",)] if isinstance(loc, list | tuple) else [str(loc)]
    return ".".join(parts) or "request"


def validation_message(errors: list[dict[str, Any]]) -> str:
    """One readable line from pydantic/FastAPI validation errors (no echo of the input)."""
    return "; ".join(f"{_location(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5])


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app``."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": redact_uri(exc.detail)}, status_code=exc.status)

    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse(
            {"detail": f"invalid request: {validation_message(errors)}", "errors": errors}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ConnectionError)
    async def _unavailable(request: Request, exc: ConnectionError) -> JSONResponse:
        # the index's database (e.g. a Milvus server) does not answer: the client may retry later
        detail = redact_uri(exc)
        logger.warning("%s %s: %s", request.method, request.url.path, detail)
        return JSONResponse({"detail": f"the archive's database is unavailable: {detail}"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)
