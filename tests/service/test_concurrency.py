"""Concurrent requests on a live loopback server: all succeed, answers equal the sequential ones, and
a retriever that is not declared thread-safe is never entered by two threads at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from csmae.service import ServiceSettings, create_app

from .conftest import LiveServer
from .fake_retriever import FakeRetriever


class CountingRetriever(FakeRetriever):
    """Records the largest number of threads inside a retriever call at the same time."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._inside = 0
        self.max_inside = 0
        self._count_lock = threading.Lock()

    def _enter(self):
        with self._count_lock:
            self._inside += 1
            self.max_inside = max(self.max_inside, self._inside)
        time.sleep(0.005)  # widen the window in which an overlap would be seen

    def _leave(self):
        with self._count_lock:
            self._inside -= 1

    def search_by_id(self, *a, **kw):
        self._enter()
        try:
            return super().search_by_id(*a, **kw)
        finally:
            self._leave()

    def preview_png(self, *a, **kw):
        self._enter()
        try:
            return super().preview_png(*a, **kw)
        finally:
            self._leave()


def _hammer(url: str, retriever: FakeRetriever, n: int = 120) -> list[tuple[dict, httpx.Response]]:
    jobs = [{"id": retriever.ids[i % len(retriever.ids)], "sensor": ("s1", "s2")[i % 2],
             "target": ("any", "s1", "s2")[i % 3], "k": 1 + i % 12} for i in range(n)]
    with httpx.Client(base_url=url, timeout=60) as c, ThreadPoolExecutor(max_workers=50) as pool:
        futures = []
        for i, p in enumerate(jobs):
            if i % 4 == 0:
                futures.append((None, pool.submit(c.get, f"/api/items/{p['id']}/preview/{p['sensor']}")))
            futures.append((p, pool.submit(c.get, "/api/search", params=p)))
        return [(p, f.result()) for p, f in futures]


@pytest.mark.parametrize("thread_safe", [False, True])
def test_fifty_concurrent_clients(thread_safe):
    retriever = CountingRetriever(n=40, seed=1)
    with LiveServer(create_app(retriever, settings=ServiceSettings(thread_safe=thread_safe))) as server:
        answers = _hammer(server.url, retriever)
    failed = [r.text for _, r in answers if r.status_code != 200]
    assert not failed, failed[:3]
    for p, r in answers:
        if p is None:
            continue
        expected = retriever.search_by_id(p["id"], sensor=p["sensor"], target=p["target"], k=p["k"])
        assert [(h["id"], h["sensor"]) for h in r.json()["results"]] == [(h.id, h.sensor) for h in expected]
    if not thread_safe:
        assert retriever.max_inside == 1
