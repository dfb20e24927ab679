"""Fuzz every API operation from the OpenAPI schema (schemathesis): no request may cause a 5xx."""

from __future__ import annotations

import pytest

from csmae.service import create_app

from .fake_retriever import FakeRetriever

schemathesis = pytest.importorskip("schemathesis",
                                   reason="schemathesis not installed (pip install -e '.[dev]')")
from hypothesis import HealthCheck, settings  # noqa: E402

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(FakeRetriever(n=12, seed=3)))


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case):
    response = case.call()
    assert response.status_code < 500, (
        f"{case.method} {case.path}: {response.status_code} {response.text[:300]}")
    content_type = response.headers.get("content-type") or [""]
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    if content_type.startswith("application/json") and response.status_code >= 400:
        assert isinstance(response.json().get("detail"), str)
