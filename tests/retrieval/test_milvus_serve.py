"""Two ``csmae serve`` processes over one Milvus server collection while two ``csmae index add``
processes write into it (#20): searches on both servers answer 200 all along (no 5xx), nothing is
lost or duplicated (count and (id, sensor) set), and after ``POST /api/reload`` both servers hold
and find every write. On the real Milvus server of the test session (Milvus Lite allows one process
per ``.db``)."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install 'csmae[milvus]')")

from csmae.retrieval.backends import milvus_archive as A  # noqa: E402
from csmae.retrieval.index import SearchIndex, build_index  # noqa: E402
from tests.service.test_reload_load import Serve  # noqa: E402

from .test_index_grow import make_emb, write_emb  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def index_add(pointer: Path, emb_dir: Path) -> subprocess.Popen:
    """``csmae index add POINTER EMB_DIR`` in its own process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "csmae", "index", "add", str(pointer), str(emb_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip


def all_items(server: Serve) -> list[tuple[str, str]]:
    """Every (id, sensor) a server lists (``/api/items``, paged)."""
    out: list[tuple[str, str]] = []
    while True:
        status, page = server.request("GET", f"/api/items?offset={len(out)}&limit=500")
        assert status == 200, page
        out += [(it["id"], it["sensor"]) for it in page["items"]]
        if len(out) >= page["total"] or not page["items"]:
            return out


def test_two_servers_two_writers_one_collection(milvus_server_uri, tmp_path):
    base = make_emb([f"a{i:04d}" for i in range(60)])
    one = make_emb([f"w{i:04d}" for i in range(0, 1500)], seed=1)
    two = make_emb([f"w{i:04d}" for i in range(1200, 2700)], seed=2)  # 300 ids written by both
    dirs = [write_emb(one, tmp_path / "one"), write_emb(two, tmp_path / "two")]
    si = build_index(base, "exact", tmp_path / "pointer-a", backend="milvus", uri=milvus_server_uri)
    shutil.copytree(tmp_path / "pointer-a", tmp_path / "pointer-b")  # the same archive on another machine
    pointers = [tmp_path / "pointer-a", tmp_path / "pointer-b"]
    want = set(zip(base.ids, base.sensors)) | set(zip(one.ids, one.sensors)) | set(zip(two.ids, two.sensors))
    try:
        with Serve(pointers[0]) as a, Serve(pointers[1]) as b:
            before = {s: all_items(s) for s in (a, b)}
            assert all(sorted(v) == sorted(zip(base.ids, base.sensors)) for v in before.values())
            stop, lock = threading.Event(), threading.Lock()
            seen: list[tuple[str, int]] = []

            def client(server: Serve, name: str, n: int) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                i = n
                while not stop.is_set():
                    pid, sensor = f"a{i % 60:04d}", ("s1", "s2")[i % 2]
                    i += 1
                    path = (f"/api/search?id={pid}&sensor={sensor}&k=10" if i % 3
                            else f"/api/items?offset={i % 50}&limit=20")  # fmt: skip
                    try:
                        status, _ = server.request("GET", path, conn=conn)
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                        status = -1
                    with lock:
                        seen.append((name, status))
                conn.close()

            threads = [threading.Thread(target=client, args=(s, name, k), daemon=True)
                       for s, name in ((a, "a"), (b, "b")) for k in range(2)]  # fmt: skip
            for t in threads:
                t.start()
            t0 = time.monotonic()
            writers = [index_add(pointers[0], dirs[0]), index_add(pointers[1], dirs[1])]  # both at once
            outs = [w.communicate(timeout=600)[0] for w in writers]
            write_s = time.monotonic() - t0
            stop.set()
            for t in threads:
                t.join(timeout=120)
            assert [w.returncode for w in writers] == [0, 0], [o[-2000:] for o in outs]
            # the searches during the writes: all 200, on both servers, and many of them
            bad = [x for x in seen if x[1] != 200]
            assert not bad, bad[:10]
            assert all(sum(1 for n, _ in seen if n == name) >= 10 for name in "ab"), len(seen)
            # the collection: 0 lost, 0 duplicated
            rows = A.read_rows(si.backend.client, si.backend.collection, ["row", "id", "sensor"],
                               si.backend._count())  # fmt: skip
            assert len(rows) == len(want) and {(r["id"], r["sensor"]) for r in rows} == want
            assert len({r["row"] for r in rows}) == len(rows)
            # before a reload each server serves its snapshot; after it, every write
            assert sorted(all_items(a)) == sorted(before[a])
            for s in (a, b):
                status, body = s.reload()
                assert status == 200, body
            for s in (a, b):
                listed = all_items(s)
                assert len(listed) == len(set(listed)) == len(want) and set(listed) == want
                status, health = s.request("GET", "/api/health")
                assert health["counts"]["vectors"] == len(want)
                for pid in ("w0000", "w1300", "w2699"):  # one writer's, both writers', the other's
                    status, got = s.request("GET", f"/api/items/{pid}")
                    assert status == 200 and sorted(got["sensors"]) == ["s1", "s2"], got
                    status, got = s.request("GET", f"/api/search?id={pid}&sensor=s1&k=10")  # its vector
                    assert status == 200 and len(got["results"]) == 10, got
        print(f"{len(seen)} searches on two servers while two writers added {len(one) + len(two)} rows "
              f"in {write_s:.1f} s: all 200")  # fmt: skip
        # what both servers found equals a fresh load (exact search over the whole collection)
        fresh = SearchIndex.load(pointers[1])
        only_two = slice(600, 603)  # w1500 s1, w1500 s2, w1501 s1: written by the second writer only
        q = two.vectors[only_two] / np.linalg.norm(two.vectors[only_two], axis=1, keepdims=True)
        _, rows_ = fresh.search(q, 1)
        assert [fresh.items["id"][r[0]] for r in rows_] == list(two.ids[only_two])
    finally:
        si.backend.drop()


def test_searches_are_strong_after_a_load_or_write_then_bounded_and_exact(milvus_server_uri, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    """Consistency (docs/milvus.md): Strong for STRONG_WINDOW_S after the snapshot is read or this
    process writes, then Bounded (no wait for the server's time tick); exact results in both."""
    from csmae.retrieval.backends import milvus as M

    monkeypatch.setattr(M, "STRONG_WINDOW_S", 2.0)
    emb = make_emb([f"c{i:04d}" for i in range(300)], seed=4)
    si = build_index(emb, "exact", tmp_path / "p", backend="milvus", uri=milvus_server_uri)
    try:
        faiss = build_index(emb, "exact")
        q = np.random.default_rng(0).normal(size=(20, 24)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        want = [[faiss.items["id"][r] for r in row] for row in faiss.search(q, 10)[1]]
        loaded = SearchIndex.load(tmp_path / "p")
        be = loaded.backend
        assert be.read_consistency() == "Strong"  # just read the snapshot
        assert [[loaded.items["id"][r] for r in row] for row in loaded.search(q, 10)[1]] == want
        time.sleep(6.0)  # past the window and the server's 5 s graceful time
        assert be.read_consistency() == "Bounded"
        t0 = time.perf_counter()
        got = loaded.search(q, 10)[1]
        bounded_s = time.perf_counter() - t0
        assert [[loaded.items["id"][r] for r in row] for row in got] == want
        rows = np.arange(5)
        np.testing.assert_array_equal(be.reconstruct(rows), faiss.backend.reconstruct(rows))  # Bounded too
        be.consistency = "Strong"  # an operator's pin
        t0 = time.perf_counter()
        assert [[loaded.items["id"][r] for r in row] for row in loaded.search(q, 10)[1]] == want
        strong_s = time.perf_counter() - t0
        print(f"one search of 20 queries: Bounded {bounded_s * 1000:.0f} ms, Strong {strong_s * 1000:.0f} ms")
        be.consistency = None
        be._write(A.item_keys(["c0000"], ["s1"]), emb.vectors[:1], loaded.items.iloc[:1], token="t")
        assert be.read_consistency() == "Strong"  # this process wrote: its next searches see it
    finally:
        si.backend.drop()


def test_a_slow_search_gets_one_longer_try_before_a_503(milvus_server_uri, tmp_path, monkeypatch):
    """A search that runs past its deadline on a server that answers (busy with writes, starved of
    CPU: seen as 503s in bench_milvus_serve before) is tried once more with SLOW_READ_S; only
    when that too runs out is it unavailable (503). A server that is down still fails at once."""
    from csmae.retrieval.backends import milvus as M
    from csmae.retrieval.backends.milvus_util import MilvusUnavailable

    emb = make_emb([f"t{i:04d}" for i in range(200)], seed=5)
    si = build_index(emb, "exact", tmp_path / "p", backend="milvus", uri=milvus_server_uri)
    try:
        loaded = SearchIndex.load(tmp_path / "p")
        q = emb.vectors[:4] / np.linalg.norm(emb.vectors[:4], axis=1, keepdims=True)
        want = loaded.search(q, 5)[1]
        monkeypatch.setattr(M, "CONNECT_TIMEOUT_S", 1e-4)  # every first try runs past its deadline
        np.testing.assert_array_equal(loaded.search(q, 5)[1], want)
        monkeypatch.setattr(M, "SLOW_READ_S", 1e-4)
        with pytest.raises(MilvusUnavailable, match="unavailable"):
            loaded.search(q, 5)
    finally:
        si.backend.drop()
