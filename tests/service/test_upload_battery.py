"""The bad-upload battery against a real `csmae serve` process over a real index (issue 14).

Malformed .npz archives, TIFF decompression bombs of every codec the reader knows, extreme values
and huge declared shapes: each answer is a JSON 4xx naming the file, the one keep-alive connection
that carries the whole battery is never dropped, and the server's peak RSS (VmHWM) grows by less
than 300 MB over it. Also: the JSON host guard (``[::1]`` accepted) and `csmae search --file`.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ..data import tiff_bombs as bombs
from .conftest import free_port

URL = "/api/search/upload"
MiB = bombs.MiB


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def plausible_s1(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(-15, 4, (2, 120, 120)).astype(np.float32)  # dB


# --- malformed .npz archives (each made from a valid one) --------------------------------------

def _zip_member_offsets(data: bytes) -> tuple[int, int, int, int]:
    """(local header offset, data offset, compressed size, central directory entry offset)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.infolist()[0]
    local = info.header_offset
    name_len, extra_len = int.from_bytes(data[local + 26:local + 28], "little"), \
        int.from_bytes(data[local + 28:local + 30], "little")
    central = data.rindex(b"PK\x01\x02")
    return local, local + 30 + name_len + extra_len, info.compress_size, central


def _npz(compression: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        zf.writestr("s1.npy", npy_bytes(plausible_s1()))
    return buf.getvalue()


def corrupt_stream(compression: int) -> bytes:
    data = bytearray(_npz(compression))
    _, start, size, _ = _zip_member_offsets(bytes(data))
    at = start if compression == zipfile.ZIP_DEFLATED else start + 9 + size // 3  # LZMA: after its header
    data[at:at + 64] = b"\xff" * 64  # deflate: reserved block type 3
    return bytes(data)


def with_flag_or_method(*, encrypted: bool = False, method: int | None = None) -> bytes:
    data = bytearray(_npz(zipfile.ZIP_DEFLATED))
    local, _, _, central = _zip_member_offsets(bytes(data))
    if encrypted:
        data[local + 6] |= 1
        data[central + 8] |= 1
    if method is not None:
        data[local + 8:local + 10] = method.to_bytes(2, "little")
        data[central + 10:central + 12] = method.to_bytes(2, "little")
    return bytes(data)


def huge_npy() -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (2, 10**6, 10**6)})
    return buf.getvalue() + b"\0" * 64


def tiff_bomb(compression: int, payload: bytes, **kw) -> bytes:
    return bombs.tiff_with_segments([payload], dtype="float32", compression=compression, **kw)


def vh_band() -> bytes:
    return bombs.tiff_with_segments([plausible_s1()[1].tobytes()], dtype="float32")


def battery() -> list[tuple[str, list[tuple[str, bytes]], str, int, str]]:
    """(case, files, sensor, status, text the detail must contain)."""
    cases = [
        ("npz corrupt deflate", [("q.npz", corrupt_stream(zipfile.ZIP_DEFLATED))], 400, "q.npz"),
        ("npz corrupt lzma", [("q.npz", corrupt_stream(zipfile.ZIP_LZMA))], 400, "q.npz"),
        ("npz encrypted flag", [("q.npz", with_flag_or_method(encrypted=True))], 400, "encrypted"),
        ("npz method 99", [("q.npz", with_flag_or_method(method=99))], 400, "method 99"),
        ("npy huge header shape", [("q.npy", huge_npy())], 413, "q.npy"),
        ("extreme values 1e30", [("q.npy", npy_bytes(np.full((2, 120, 120), 1e30, np.float32)))], 400,
         "plausible range"),
        ("extreme values 1e6", [("q.npy", npy_bytes(np.full((2, 120, 120), 1e6, np.float32)))], 400,
         "plausible range"),
        ("tiff declaring 100000 px", [("x_VV.tif", bombs.tiff_with_segments(
            [bytes(64)], width=100_000, height=100_000, dtype="float32")), ("x_VH.tif", vh_band())], 400,
         "100000x100000"),
    ]
    tiffs = [
        ("deflate 512 MiB", bombs.DEFLATE, lambda: bombs.deflate_zeros(512 * MiB), {}),
        ("deflate tile 512 MiB", bombs.DEFLATE, lambda: bombs.deflate_zeros(512 * MiB), {"tile": (128, 128)}),
        ("lzma 1 GiB", bombs.LZMA, lambda: bombs.lzma_zeros(1024 * MiB), {}),
        ("packbits 64 MiB", bombs.PACKBITS, lambda: bombs.packbits_zeros(64 * MiB), {}),
        ("packbits in-bound", bombs.PACKBITS, lambda: bombs.packbits_zeros(2 * 57_600), {}),
    ]
    try:
        import zstandard  # noqa: F401

        tiffs.append(("zstd 1 GiB", bombs.ZSTD, lambda: bombs.zstd_zeros(1024 * MiB), {}))
    except ImportError:
        pass
    try:
        import rasterio  # noqa: F401

        tiffs.append(("lzw 16 MiB", bombs.LZW, lambda: bombs.lzw_zeros_from_gdal(4096), {}))
    except ImportError:
        pass
    for name, compression, payload, kw in tiffs:
        files = [("bomb_VV.tif", tiff_bomb(compression, payload(), **kw)), ("bomb_VH.tif", vh_band())]
        cases.append((f"tiff {name}", files, 413, "bomb_VV.tif"))
    return [(name, files, "s1", status, text) for name, files, status, text in cases]


# --- a real server process -----------------------------------------------------------------

def multipart(files: list[tuple[str, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for key, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
        parts.append(f"{head}{value}\r\n".encode())
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


class ServeProcess:
    """`python -m csmae serve INDEX` on a free port; waits for /api/health."""

    def __init__(self, index_dir: Path, *, host: str = "127.0.0.1"):
        self.host, self.port = host, free_port()
        self.cmd = [sys.executable, "-m", "csmae", "serve", str(index_dir), "--host", host,
                    "--port", str(self.port), "--log-level", "warning"]

    def __enter__(self) -> ServeProcess:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    out = self.proc.stdout.read() if self.proc.stdout else ""
                    self.proc.kill()
                    pytest.fail(f"server did not start: {out[-2000:]}")
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def post(conn: http.client.HTTPConnection, files, sensor: str = "s1") -> tuple[int, dict, bool]:
    body, ctype = multipart(files, {"sensor": sensor, "target": "any", "k": "5"})
    conn.request("POST", URL, body=body, headers={"Content-Type": ctype})
    resp = conn.getresponse()
    payload = resp.read()
    assert resp.getheader("content-type", "").startswith("application/json"), payload[:200]
    return resp.status, json.loads(payload), bool(resp.will_close)


def test_bad_upload_battery_json_4xx_keepalive_and_bounded_memory(real_retriever):
    cases = _battery_cache()
    valid = [("q.npy", npy_bytes(plausible_s1(1)))]
    with ServeProcess(real_retriever.index.path) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        status, body, closes = post(conn, valid)  # warm-up: loads the model lazily
        assert status == 200 and len(body["results"]) == 5 and not closes
        sock = conn.sock
        before = vm_hwm_kb(server.proc.pid)
        for name, files, sensor, expected, text in cases:
            status, body, closes = post(conn, files, sensor)
            assert status == expected, (name, body)
            assert isinstance(body["detail"], str) and text in body["detail"], (name, body)
            assert "Traceback" not in body["detail"]
            assert not closes and conn.sock is sock, f"{name}: the keep-alive connection was dropped"
            status, body, _ = post(conn, valid)  # the same connection still serves a good query
            assert status == 200 and len(body["results"]) == 5, name
        # two bombs at once, on two more connections
        lzma_case = next(c for c in cases if c[0] == "tiff lzma 1 GiB")
        statuses: list[int] = []

        def send() -> None:
            c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            statuses.append(post(c, lzma_case[1])[0])
            c.close()

        threads = [threading.Thread(target=send) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert statuses == [413, 413]
        grown_mb = (vm_hwm_kb(server.proc.pid) - before) / 1024
        conn.close()
    print(f"server VmHWM {before / 1024:.0f} MB before the battery, +{grown_mb:.1f} MB over it")
    assert grown_mb < 300, f"server peak RSS grew by {grown_mb:.0f} MB over the battery"


# --- host guard ------------------------------------------------------------------------------

def test_host_guard_accepts_bracketed_ipv6_and_refuses_in_json():
    from fastapi.testclient import TestClient

    from csmae.service import ServiceSettings, create_app
    from csmae.service.middleware import host_of

    from .fake_retriever import FakeRetriever

    assert [host_of(h) for h in ("[::1]:8000", "[::1]", "LocalHost:80", "127.0.0.1", "evil.example:1")] == \
        ["::1", "::1", "localhost", "127.0.0.1", "evil.example"]
    settings = ServiceSettings(allowed_hosts=("127.0.0.1", "localhost", "::1"))
    app = create_app(FakeRetriever(n=3), settings=settings)
    with TestClient(app) as c:
        for host in ("[::1]:8000", "[::1]", "localhost:8000", "127.0.0.1:9"):
            assert c.get("/api/health", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "[::2]:8000", "127.0.0.1.evil.example", ""):
            r = c.get("/api/health", headers={"Host": host})
            assert r.status_code == 400 and r.headers["content-type"] == "application/json", host
            assert "is not allowed" in r.json()["detail"]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_serve_on_ipv6_loopback(real_retriever, monkeypatch):
    """`csmae serve --host ::1` (its run() in this process, the app served by uvicorn on ::1):
    requests with Host [::1]:port are answered; a foreign Host is a JSON 400."""
    import uvicorn

    from csmae.cli import build_parser
    from csmae.cli.serve import run

    captured: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: captured.update(app=app, **kw))
    port = free_port()
    assert run(build_parser().parse_args(["serve", str(real_retriever.index.path), "--host", "[::1]",
                                          "--port", str(port)])) == 0
    assert captured["host"] == "::1"
    config = uvicorn.Config(captured["app"], host="::1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start on ::1"
            time.sleep(0.05)
        conn = http.client.HTTPConnection("::1", port, timeout=30)  # sends Host: [::1]:port
        conn.request("GET", "/api/health")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
        conn.request("GET", "/api/health", headers={"Host": "evil.example"})
        resp = conn.getresponse()
        assert resp.status == 400 and "is not allowed" in json.loads(resp.read())["detail"]
        conn.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# --- the same files through `csmae search --file` ------------------------------------------

CLI_CASES = ["npz corrupt deflate", "npz corrupt lzma", "npz encrypted flag", "npz method 99",
             "npy huge header shape", "tiff lzma 1 GiB", "tiff deflate 512 MiB", "extreme values 1e30"]


def _write(tmp_path: Path, files: list[tuple[str, bytes]]) -> list[str]:
    for name, data in files:
        (tmp_path / name).write_bytes(data)
    return [str(tmp_path / name) for name, _ in files]


def test_query_files_refuse_the_battery(tmp_path):
    """read_query (what `csmae search --file` uses) gives a ValueError naming the file for each case."""
    from csmae.retrieval.queryfiles import read_query
    from csmae.sensors import SENSORS

    for case in CLI_CASES:
        _, files, sensor, _, text = next(c for c in _battery_cache() if c[0] == case)
        folder = tmp_path / case.replace(" ", "_")
        folder.mkdir()
        paths = _write(folder, files)
        with pytest.raises(ValueError) as exc:
            read_query(paths, SENSORS[sensor])
        msg = str(exc.value)
        assert files[0][0] in msg and text in msg, (case, msg)


def test_search_file_corrupt_npz_is_a_clean_cli_error(real_retriever, tmp_path, capsys):
    from csmae.cli import main

    _, files, sensor, _, _ = next(c for c in _battery_cache() if c[0] == "npz corrupt lzma")
    paths = _write(tmp_path, files)
    code = main(["search", str(real_retriever.index.path), "--file", *paths, "--sensor", sensor])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "q.npz" in err and "corrupt" in err, err


_CACHE: list = []


def _battery_cache() -> list:
    if not _CACHE:
        _CACHE.extend(battery())
    return _CACHE


def test_battery_cases_are_what_they_claim():
    """The malformed archives really are: numpy itself fails on them with the issue's errors."""
    import lzma
    import zlib

    expected = {"npz corrupt deflate": zlib.error, "npz corrupt lzma": lzma.LZMAError,
                "npz encrypted flag": RuntimeError, "npz method 99": NotImplementedError}
    for name, files, *_ in _battery_cache():
        if name in expected:
            with pytest.raises(expected[name]), np.load(io.BytesIO(files[0][1])) as z:
                [z[k] for k in z.files]


def test_non_finite_descriptor_is_an_error_not_an_empty_answer(real_retriever):
    """Past the upload checks (Python API): values that overflow the model are a ValueError (400 in
    the API), not a search that silently returns no neighbours."""
    c = real_retriever.model.sensors["s2"].num_channels
    with pytest.raises(ValueError, match="non-finite descriptor"):
        real_retriever.search_by_arrays(np.full((c, 120, 120), 1e30, np.float32), sensor="s2")
    brightest = np.full((c, 120, 120), 65535, np.float32)  # the top of the plausible range still works
    assert len(real_retriever.search_by_arrays(brightest, sensor="s2", k=3)) == 3


def _seed_uploads() -> list[tuple[str, bytes]]:
    """Valid uploads of every kind the decoder reads: .npy, .npz (4 ZIP methods), TIFF layouts."""
    import tifffile

    arr = plausible_s1(3)
    out = [("q.npy", npy_bytes(arr))]
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=method) as zf:
            zf.writestr("VV.npy", npy_bytes(arr[0]))
            zf.writestr("VH.npy", npy_bytes(arr[1]))
        out.append(("q.npz", buf.getvalue()))
    for kw in ({}, {"compression": "zlib", "rowsperstrip": 7}, {"compression": "lzma", "tile": (64, 64)},
               {"bigtiff": True, "compression": "zlib"}):
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr[0], **kw)
        out.append(("x_VV.tif", buf.getvalue()))
    out.append(("x_VV.tif", bombs.tiff_with_segments([zlib_rows(arr[0])], dtype="float32",
                                                     compression=bombs.DEFLATE, predictor=3)))
    return out


def zlib_rows(band: np.ndarray) -> bytes:
    """Deflate of a float band with the floating-point predictor (byte planes, MSB first, byte deltas)."""
    import zlib

    planes = band.astype(">f4").view(np.uint8).reshape(band.shape[0], band.shape[1], 4).transpose(0, 2, 1)
    rows = planes.reshape(band.shape[0], -1)
    return zlib.compress(np.diff(rows, axis=1, prepend=0).astype(np.uint8).tobytes())


def test_mutated_uploads_are_200_or_4xx_never_an_exception():
    """2000 random byte changes / truncations of valid uploads: decode_upload returns an image or
    raises UploadError (-> JSON 4xx), never anything else (which would be a 500)."""
    import random

    from csmae.sensors import SENSORS
    from csmae.service.uploads import UploadedFile, UploadError, decode_upload

    seeds = _seed_uploads()
    vh = UploadedFile("x_VH.tif", vh_band())
    for name, data in seeds:  # the seeds themselves decode
        files = [UploadedFile(name, data)] + ([vh] if name.endswith(".tif") else [])
        assert decode_upload(files, SENSORS["s1"]).shape == (2, 120, 120), name
    rnd = random.Random(0)
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(2000):
        name, data = rnd.choice(seeds)
        d = bytearray(data)
        for _ in range(rnd.choice([1, 1, 2, 4, 16])):
            if not d:
                break
            i = rnd.randrange(len(d))
            if rnd.random() < 0.8:
                d[i:i + rnd.choice([1, 4])] = rnd.randbytes(4)[: rnd.choice([1, 4])]
            else:
                del d[i:]
        files = [UploadedFile(name, bytes(d) or b"x")] + ([vh] if name.endswith(".tif") else [])
        try:
            decode_upload(files, SENSORS["s1"])
            outcomes["ok"] += 1
        except UploadError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 500 and outcomes["ok"] > 20, outcomes  # (most pixel changes are implausible)
