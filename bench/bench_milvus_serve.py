"""Two writers into one Milvus server collection while two ``csmae serve`` answer searches (not a test).

A pointer index over a base archive (``--base`` items) is copied to a second folder (another
machine's copy). Two ``csmae serve`` processes (one per pointer) answer searches by id from client
threads while two ``csmae index add`` processes each upsert ``--per-writer`` new rows (D = ``--dim``,
distinct ids). Reported: write throughput (rows/s, both writers together, wall time from start to
the last one's exit), the searches during the writes (count, HTTP statuses, median / p95 latency
per server), then after ``POST /api/reload`` on both servers: each server's count and (id, sensor)
set against the expected set, and the collection's row count and key set (0 lost, 0 duplicated).

  PYTHONPATH=.:src python bench/bench_milvus_serve.py --server start [--per-writer 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKEN = "bench-token"


def write_folder(out: Path, ids: list[str], dim: int, seed: int, shard_rows: int = 8192) -> Path:
    """An embeddings folder: both sensors of each id, clustered unit-ish vectors."""
    from csmae.integrity import checksum_files
    from csmae.retrieval.artifacts import base_manifest, write_json_atomic
    from csmae.retrieval.embeddings import write_shard

    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((200, dim), dtype=np.float32)
    out.mkdir(parents=True)
    entries = []
    per = shard_rows // 2
    for j, lo in enumerate(range(0, len(ids), per)):
        part = ids[lo : lo + per]
        n = len(part)
        v = centres[rng.integers(0, 200, 2 * n)] + 0.8 * rng.standard_normal((2 * n, dim), dtype=np.float32)
        write_shard(out / f"part-{j:05d}.parquet", ids=[i for i in part for _ in range(2)],
                    sensors=["s1", "s2"] * n, splits=["test"] * (2 * n),
                    labels=np.repeat(rng.random((n, 19)) < 0.15, 2, axis=0), vectors=v)  # fmt: skip
        entries.append({"file": f"part-{j:05d}.parquet", "rows": 2 * n})
    from csmae.labels import LABELS_19

    man = base_manifest("csmae-embeddings", model={"name": "bench", "sha256": "b" * 64, "dim": dim},
                        sensors={"s1": {"bands": ["VV", "VH"]}, "s2": {"bands": ["B02"]}}, dim=dim,
                        label_names=list(LABELS_19), count=2 * len(ids), shards=entries,
                        checksums=checksum_files(out, [e["file"] for e in entries]))  # fmt: skip
    write_json_atomic(out / "manifest.json", man)
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "CSMAE_ADMIN_TOKEN": TOKEN,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip


def csmae(*argv: str, out: int | None = subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "csmae", *argv], stdout=out, stderr=subprocess.STDOUT,
                            text=True, env=_env())  # fmt: skip


class Server:
    def __init__(self, pointer: Path):
        from tests.retrieval.milvus_server import free_port

        self.port = free_port()
        self.log = open(pointer.with_name(pointer.name + ".serve.log"), "w")  # noqa: SIM115
        self.proc = csmae("serve", str(pointer), "--port", str(self.port), "--log-level", "warning",
                          out=self.log.fileno())  # fmt: skip
        t0 = time.monotonic()
        while time.monotonic() - t0 < 600:
            with contextlib.suppress(OSError):
                if self.get("/api/health")[0] == 200:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"csmae serve {pointer} exited with {self.proc.returncode}")
            time.sleep(0.5)
        raise RuntimeError(f"csmae serve {pointer} did not start")

    def get(self, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, dict]:
        own = conn is None
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, json.loads(r.read() or b"{}")
        finally:
            if own:
                c.close()

    def reload(self) -> tuple[int, dict]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            head = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
            c.request("POST", "/api/reload", body=b"{}", headers=head)
            r = c.getresponse()
            return r.status, json.loads(r.read() or b"{}")
        finally:
            c.close()

    def items(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        while True:
            status, page = self.get(f"/api/items?offset={len(out)}&limit=500")
            if status != 200:
                raise RuntimeError(f"/api/items: {status} {page}")
            out += [(it["id"], it["sensor"]) for it in page["items"]]
            if len(out) >= page["total"] or not page["items"]:
                return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="start", help="'start' (a local Milvus 2.3.5 standalone) or a URI")
    ap.add_argument("--base", type=int, default=10_000, help="items in the archive before the writes")
    ap.add_argument("--per-writer", type=int, default=100_000, help="rows each writer adds")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--clients", type=int, default=2, help="search threads per server")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--server-nice", type=int, default=0,
                    help="renice the started server (e.g. 19: a starved server, to see how searches fare)")
    a = ap.parse_args()
    from csmae.retrieval.backends import milvus_archive as A
    from csmae.retrieval.index import SearchIndex

    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-milvus-serve-"))
    stack = contextlib.ExitStack()
    uri = a.server
    if uri == "start":
        from tests.retrieval.milvus_server import milvus_server

        uri = stack.enter_context(milvus_server(work / "server"))
        if a.server_nice:
            mine = str(work / "server")  # this bench's server only (its binary lives in its folder)
            for line in subprocess.run(["pgrep", "-f", f"{mine}/.*milvus run standalone"], text=True,
                                       capture_output=True).stdout.split():  # fmt: skip
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, int(line), a.server_nice)
    base_ids = [f"base{i:07d}" for i in range(a.base // 2)]
    w_ids = [[f"w{k}-{i:07d}" for i in range(a.per_writer // 2)] for k in range(2)]
    t0 = time.perf_counter()
    base = write_folder(work / "emb-base", base_ids, a.dim, 1)
    dirs = [write_folder(work / f"emb-w{k}", w_ids[k], a.dim, 10 + k) for k in range(2)]
    print(f"folders written in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    p = csmae("index", str(base), "--out", str(work / "pointer-a"), "--backend", "milvus", "--uri", uri)
    out = p.communicate()[0]
    assert p.returncode == 0, out[-3000:]
    shutil.copytree(work / "pointer-a", work / "pointer-b")
    want = {(i, s) for ids in (base_ids, *w_ids) for i in ids for s in ("s1", "s2")}
    servers = [Server(work / "pointer-a"), Server(work / "pointer-b")]
    stop, lock = threading.Event(), threading.Lock()
    seen: list[tuple[int, int, float]] = []  # server, status, ms
    errors: list[str] = []  # the first answers that were not 200

    def client(si: int, n: int) -> None:
        srv = servers[si]
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
        i = n * 7919
        while not stop.is_set():
            pid = base_ids[i % len(base_ids)]
            i += 1
            t = time.perf_counter()
            try:
                status, body = srv.get(f"/api/search?id={pid}&sensor=s1&k=10", conn=conn)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
                status, body = -1, {"detail": repr(e)}
            ms = (time.perf_counter() - t) * 1000
            with lock:
                seen.append((si, status, ms))
                if status != 200 and len(errors) < 20:
                    errors.append(f"{'ab'[si]} {status} after {ms:.0f} ms: {str(body.get('detail'))[:400]}")
        conn.close()

    print(f"start {os.popen('uptime').read().strip()}")
    threads = [threading.Thread(target=client, args=(si, n), daemon=True)
               for si in range(2) for n in range(a.clients)]  # fmt: skip
    for t in threads:
        t.start()
    time.sleep(5)  # searches before the writes
    t0 = time.perf_counter()
    writers = [csmae("index", "add", str(work / f"pointer-{x}"), str(d)) for x, d in zip("ab", dirs)]
    outs = [w.communicate()[0] for w in writers]
    write_s = time.perf_counter() - t0
    n_during = len(seen)
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join(timeout=300)
    assert [w.returncode for w in writers] == [0, 0], [o[-3000:] for o in outs]
    print(f"end of writes {os.popen('uptime').read().strip()}")
    rows = 2 * a.per_writer
    print(f"\ntwo writers, {a.per_writer:,} rows each (D = {a.dim}), into one server collection holding "
          f"{a.base:,}: {write_s:.1f} s, {rows / write_s:,.0f} rows/s together")  # fmt: skip
    print(f"searches by id (k = 10) on the two servers meanwhile ({a.clients} threads each): {n_during:,}")
    print("| server | searches | HTTP statuses | median ms | p95 ms |\n|---|---:|---|---:|---:|")
    for si in range(2):
        mine = [x for x in seen if x[0] == si]
        st: dict[int, int] = {}
        for _, s, _ in mine:
            st[s] = st.get(s, 0) + 1
        lat = [ms for _, s, ms in mine if s == 200]
        print(f"| {'ab'[si]} | {len(mine):,} | {st} | {np.median(lat):.1f} | {np.percentile(lat, 95):.1f} |")
    for e in errors:
        print("  not 200:", e)
    reload_s = []
    for srv in servers:
        t = time.perf_counter()
        status, body = srv.reload()
        reload_s.append(time.perf_counter() - t)
        assert status == 200, body
    for si, srv in enumerate(servers):
        got = srv.items()
        health = srv.get("/api/health")[1]["counts"]["vectors"]
        print(f"server {'ab'[si]} after reload ({reload_s[si]:.1f} s): {len(got):,} items listed, "
              f"{len(set(got)):,} distinct, health count {health:,}, equals the expected set: "
              f"{set(got) == want}")  # fmt: skip
    si_ = SearchIndex.load(work / "pointer-a")
    be = si_.backend
    keys = A.read_rows(be.client, be.collection, ["row"], be._count())
    want_keys = set(A.item_keys([w[0] for w in want], [w[1] for w in want]).tolist())
    got_keys = [int(r["row"]) for r in keys]
    lost, extra = len(want_keys - set(got_keys)), len(set(got_keys) - want_keys)
    print(f"collection: {len(got_keys):,} rows, {len(set(got_keys)):,} distinct keys, expected "
          f"{len(want):,}; lost {lost}, unexpected {extra}")
    print(f"end {os.popen('uptime').read().strip()}")
    for srv in servers:
        srv.stop()
    be.drop()
    stack.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
