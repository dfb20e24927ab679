"""Reload under load (issue #20 item 4): a real ``csmae serve`` in a subprocess, client threads
searching while reloads alternate between two index folders and a corrupt one.

Every answer must be a 200 equal to the exact answer of index A or of index B (computed here by the
Python API over each folder): no 5xx, no half-swapped state. A reload to the corrupt folder is a 400
saying why, and the previous index keeps serving.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from csmae.retrieval.index import build_index
from csmae.retrieval.retriever import Retriever
from tests.retrieval.test_index_grow import make_emb

from .conftest import free_port
from .test_hostile import swap_link

TOKEN = "load-test-token"
IDS = [f"p{i:03d}" for i in range(80)]
QUERIES = [(f"p{i:03d}", s) for i in (0, 7, 21, 42, 63) for s in ("s1", "s2")]
CLIENTS, SEARCH_SECONDS, RELOADS = 6, 8.0, 12


def _path(pid: str, sensor: str) -> str:
    return f"/api/search?id={pid}&sensor={sensor}&k=10"


def _answer(payload: dict) -> tuple:
    return tuple((h["id"], h["sensor"], round(h["score"], 4)) for h in payload["results"])


def _expected(folder: Path) -> dict[tuple[str, str], tuple]:
    r = Retriever.load(folder)
    return {q: tuple((h.id, h.sensor, round(h.score, 4)) for h in r.search_by_id(q[0], sensor=q[1], k=10))
            for q in QUERIES}


class Serve:
    """``python -m csmae serve LINK --admin-token ...`` on a free loopback port."""

    def __init__(self, index: Path):
        self.port = free_port()
        env = {**os.environ, "CSMAE_ADMIN_TOKEN": TOKEN,
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                              os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "csmae", "serve", str(index), "--port", str(self.port), "--log-level",
             "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def __enter__(self) -> Serve:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                status, _ = self.request("GET", "/api/health")
                if status == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        out = self.proc.stdout.read() if self.proc.poll() is not None and self.proc.stdout else ""
        self.__exit__()
        pytest.fail(f"csmae serve did not start: {out[-2000:]}")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def request(self, method: str, path: str, *, conn: http.client.HTTPConnection | None = None,
                headers: dict | None = None, body: bytes | None = None) -> tuple[int, dict]:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            if own:
                conn.close()

    def reload(self) -> tuple[int, dict]:
        return self.request("POST", "/api/reload", body=b"{}", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})


def test_reload_under_concurrent_searches(tmp_path):
    build_index(make_emb(IDS, seed=0), "exact", tmp_path / "idx-a")
    build_index(make_emb(IDS, seed=1), "exact", tmp_path / "idx-b")
    corrupt = tmp_path / "idx-corrupt"
    shutil.copytree(tmp_path / "idx-a", corrupt)
    vec = corrupt / json.loads((corrupt / "manifest.json").read_text())["backend"]["file"]
    data = bytearray(vec.read_bytes())
    data[len(data) // 2] ^= 0x10
    vec.write_bytes(bytes(data))
    want = {"a": _expected(tmp_path / "idx-a"), "b": _expected(tmp_path / "idx-b")}
    assert all(want["a"][q] != want["b"][q] for q in QUERIES)  # the two indexes answer differently
    link = tmp_path / "live"
    swap_link(link, tmp_path / "idx-a")

    with Serve(link) as server:
        stop = threading.Event()
        seen: list[tuple[int, str | None]] = []  # (status, which index answered)
        lock = threading.Lock()

        def client(n: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            i = n
            while not stop.is_set():
                q = QUERIES[i % len(QUERIES)]
                i += 1
                try:
                    status, payload = server.request("GET", _path(*q), conn=conn)
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                    with lock:
                        seen.append((-1, None))
                    continue
                got = _answer(payload) if status == 200 else None
                which = next((k for k, w in want.items() if w[q] == got), None)
                with lock:
                    seen.append((status, which))
            conn.close()

        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        current, t0, reloads = "a", time.monotonic(), []
        for k in range(RELOADS):
            target = ("b" if current == "a" else "a") if k % 3 != 2 else "corrupt"
            swap_link(link, tmp_path / f"idx-{target}")
            status, body = server.reload()
            reloads.append((target, status, body))
            if target != "corrupt":
                assert status == 200, body
                current = target
            else:
                assert status == 400, body
                detail = body["detail"]
                assert "still serving the previous index" in detail and "sha256 mismatch" in detail
            # right after the reload (or the refused one) every search answers from `current`
            s, payload = server.request("GET", _path(*QUERIES[0]))
            assert s == 200 and _answer(payload) == want[current][QUERIES[0]], (target, status)
            time.sleep(max(0.0, (k + 1) * SEARCH_SECONDS / RELOADS - (time.monotonic() - t0)))
        stop.set()
        for t in threads:
            t.join(timeout=60)

    statuses = [s for s, _ in seen]
    print(f"{len(seen)} searches by {CLIENTS} clients during {RELOADS} reloads: "
          f"{sum(w == 'a' for _, w in seen)} answered by index A, {sum(w == 'b' for _, w in seen)} by B")
    assert len(seen) > 50, len(seen)
    assert not [s for s in statuses if s >= 500 or s < 0], sorted(set(statuses))
    assert set(statuses) == {200}
    answered = [w for _, w in seen]
    assert None not in answered  # every answer is index A's or index B's, never a mix
    assert {"a", "b"} <= set(answered)
    assert [r[1] for r in reloads].count(400) == RELOADS // 3
