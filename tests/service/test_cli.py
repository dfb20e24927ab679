"""`csmae serve`: argument parsing, loopback default, and a real server process over a real index."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from csmae.cli import build_parser
from csmae.cli.serve import is_loopback

from .conftest import free_port


def test_defaults_bind_loopback():
    args = build_parser().parse_args(["serve", "some/index"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.data is None and not args.serialize
    args = build_parser().parse_args(["serve", "idx", "--data", "a", "b", "--port", "9", "--max-k", "5"])
    assert args.data == ["a", "b"] and args.port == 9 and args.max_k == 5


@pytest.mark.parametrize("host,expected", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("192.168.1.4", False), ("example.org", False), ("::", False),
])
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


def test_missing_index_is_a_clear_error(tmp_path):
    from csmae.cli import main

    pytest.importorskip("csmae.retrieval.retriever", reason="retrieval core not built yet")
    assert main(["serve", str(tmp_path / "nope"), "--port", "0"]) == 1


def test_serve_process_over_real_index(real_retriever, v1_roots):
    index_dir = real_retriever.index.path
    port = free_port()
    cmd = [sys.executable, "-m", "csmae", "serve", str(index_dir), "--data", str(v1_roots[0]),
           str(v1_roots[1]), "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(url + "/api/health", timeout=2)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read() if proc.stdout else ""
                    pytest.fail(f"server did not start: {out[-2000:]}")
                time.sleep(0.3)
        assert health.status_code == 200
        assert health.json()["counts"]["vectors"] == len(real_retriever.index.items)
        assert httpx.get(url + "/").status_code == 200
        pid = httpx.get(url + "/api/items", params={"limit": 1}).json()["items"][0]["id"]
        assert httpx.get(f"{url}/api/items/{pid}/preview/s2").headers["content-type"] == "image/png"
        # DNS-rebinding guard: a foreign Host header is refused on a loopback bind
        assert httpx.get(url + "/api/health", headers={"Host": "evil.example"}).status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=20)
