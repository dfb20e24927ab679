"""The service's retriever protocol declares the search core's signatures, ``where`` included."""

from __future__ import annotations

import inspect

import pytest

from csmae.retrieval.retriever import Retriever
from csmae.retrieval.search_core import SearchCore
from csmae.service.protocol import RetrieverLike

from .fake_retriever import FakeRetriever


def _params(fn) -> list[tuple[str, object, object]]:
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values() if p.name != "self"]


@pytest.mark.parametrize("name", ["items", "search_by_id"])
def test_protocol_matches_the_core(name):
    assert _params(getattr(RetrieverLike, name)) == _params(getattr(SearchCore, name))


@pytest.mark.parametrize("name", ["items", "search_by_id", "search_by_arrays"])
def test_retriever_and_fake_implement_the_protocol(name):
    declared = _params(getattr(RetrieverLike, name))
    assert _params(getattr(Retriever, name)) == declared
    fake = [(n, kind, default) for n, kind, default in _params(getattr(FakeRetriever, name))]
    assert [(n, kind) for n, kind, _ in fake] == [(n, kind) for n, kind, _ in declared]
    assert "where" in [n for n, *_ in declared]
