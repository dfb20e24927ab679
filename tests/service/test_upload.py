"""Search by uploaded files: .npy, .npz and BigEarthNet-style GeoTIFF bands; bad uploads are 4xx."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient

from csmae.data.base import upsample_band
from csmae.sensors import SENSORS
from csmae.service import ServiceSettings, create_app

from .fake_retriever import FakeRetriever

URL = "/api/search/upload"


def npy_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def tif_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr)
    return buf.getvalue()


def band_files(fake: FakeRetriever, pid: str, sensor: str, *, native: bool = False, extra=()):
    """(field, (name, bytes)) multipart entries, one GeoTIFF per band, named as in BigEarthNet."""
    spec = SENSORS[sensor]
    raw = fake.pixels[(pid, sensor)]
    dtype = np.uint16 if sensor == "s2" else np.float32
    files = []
    for band in spec.bands:
        arr = raw[spec.index(band)]
        side = spec.native_side(band)
        if native and side != 120:
            arr = arr[:: 120 // side, :: 120 // side]
        files.append(("files", (f"{pid}_{band}.tif", tif_bytes(arr.astype(dtype)), "image/tiff")))
    for band in extra:
        files.append(("files", (f"{pid}_{band}.tif", tif_bytes(np.zeros((20, 20), np.uint16)), "image/tiff")))
    return files


def check_same_as_by_id(client, fake, body, pid, sensor, target):
    by_id = client.get("/api/search", params={"id": pid, "sensor": sensor, "target": target, "k": 8,
                                              "exclude_self": "false"}).json()
    pairs = lambda res: [(h["id"], h["sensor"]) for h in res["results"]]  # noqa: E731
    assert pairs(body) == pairs(by_id)
    np.testing.assert_allclose([h["score"] for h in body["results"]], [h["score"] for h in by_id["results"]],
                               rtol=1e-4, atol=1e-5)
    assert body["query"]["id"] is None and body["precision_at_k"] is None
    assert body["query"]["preview"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("sensor,target", [("s2", "any"), ("s1", "s1")])
def test_upload_npy_equals_search_by_id(client, fake, sensor, target):
    pid = fake.ids[4]
    files = [("files", ("query.npy", npy_bytes(fake.pixels[(pid, sensor)]), "application/octet-stream"))]
    r = client.post(URL, files=files, data={"sensor": sensor, "target": target, "k": "8"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"][0]["id"] == pid and body["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    check_same_as_by_id(client, fake, body, pid, sensor, target)


def test_upload_npz_single_array_and_per_band(client, fake):
    pid = fake.ids[7]
    raw = fake.pixels[(pid, "s2")]
    single, per_band = io.BytesIO(), io.BytesIO()
    np.savez_compressed(single, image=raw)
    np.savez(per_band, **{b: raw[i] for i, b in enumerate(SENSORS["s2"].bands)})
    for payload in (single.getvalue(), per_band.getvalue()):
        r = client.post(URL, files=[("files", ("q.npz", payload, "application/zip"))],
                        data={"sensor": "s2", "target": "any", "k": "8"})
        assert r.status_code == 200, r.text
        check_same_as_by_id(client, fake, r.json(), pid, "s2", "any")


def test_upload_geotiff_bands_equals_search_by_id(client, fake):
    pid = fake.ids[9]
    files = band_files(fake, pid, "s2", extra=("B01", "B09"))  # unused S2 bands are ignored
    r = client.post(URL, files=files, data={"sensor": "s2", "target": "any", "k": "8"})
    assert r.status_code == 200, r.text
    check_same_as_by_id(client, fake, r.json(), pid, "s2", "any")
    assert len(r.json()["query"]["files"]) == 12


def test_upload_native_size_bands_are_upsampled(client, fake, monkeypatch):
    pid = fake.ids[1]
    seen = {}
    real = fake.search_by_arrays

    def spy(raw, **kw):
        seen["raw"] = raw
        return real(raw, **kw)

    monkeypatch.setattr(fake, "search_by_arrays", spy)
    r = client.post(URL, files=band_files(fake, pid, "s2", native=True), data={"sensor": "s2", "k": "3"})
    assert r.status_code == 200, r.text
    spec = SENSORS["s2"]
    i = spec.index("B05")
    low = fake.pixels[(pid, "s2")][i][::2, ::2].astype(np.uint16)
    np.testing.assert_allclose(seen["raw"][i], upsample_band(low), rtol=1e-6)
    np.testing.assert_array_equal(seen["raw"][spec.index("B04")], fake.pixels[(pid, "s2")][spec.index("B04")])


def _bomb() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, image=np.zeros((17 * 1024 * 1024,), np.float32))  # 68 MB of zeros
    return buf.getvalue()


BAD_UPLOADS = [
    ("wrong extension", [("q.png", b"\x89PNG\r\n\x1a\n")], "s2", 415),
    ("no extension", [("query", b"data")], "s2", 415),
    ("pickled object array", [("q.npy", "PICKLE")], "s2", 400),
    ("npy with wrong shape", [("q.npy", npy_bytes(np.zeros((3, 120, 120), np.float32)))], "s2", 400),
    ("npy of strings", [("q.npy", npy_bytes(np.array(["a", "b"])))], "s1", 400),
    ("npy with NaN", [("q.npy", npy_bytes(np.full((2, 120, 120), np.nan, np.float32)))], "s1", 400),
    ("not really npy", [("q.npy", b"\x93NUMPY garbage")], "s1", 400),
    ("fake npy magic", [("q.npy", b"hello")], "s1", 400),
    ("fake tiff", [("x_VV.tif", b"II*\x00broken"), ("x_VH.tif", b"II*\x00broken")], "s1", 400),
    ("tiff without band in name", [("image.tif", tif_bytes(np.zeros((120, 120), np.float32)))], "s1", 400),
    ("missing band", [("x_VV.tif", tif_bytes(np.zeros((120, 120), np.float32)))], "s1", 400),
    ("foreign band", [("x_B04.tif", tif_bytes(np.zeros((120, 120), np.uint16)))], "s1", 400),
    ("band twice", [("a_VV.tif", tif_bytes(np.zeros((120, 120), np.float32))),
                    ("b_VV.tif", tif_bytes(np.zeros((120, 120), np.float32)))], "s1", 400),
    ("band too large", [("x_VV.tif", tif_bytes(np.zeros((240, 240), np.float32))),
                        ("x_VH.tif", tif_bytes(np.zeros((120, 120), np.float32)))], "s1", 400),
    ("mix of npy and tif", [("q.npy", npy_bytes(np.zeros((2, 120, 120), np.float32))),
                            ("x_VV.tif", tif_bytes(np.zeros((120, 120), np.float32)))], "s1", 400),
    ("corrupt npz", [("q.npz", b"PK\x03\x04garbage")], "s2", 400),
    ("npz with many keys", [("q.npz", "MANYKEYS")], "s2", 400),
    ("zip bomb npz", [("q.npz", "BOMB")], "s2", 413),
    ("npy declaring a huge shape", [("q.npy", "HUGE")], "s2", 413),
    ("npz member declaring a huge shape", [("q.npz", "HUGEZ")], "s2", 413),
    ("traversal file name", [("../../etc/passwd", b"root:x:0:0")], "s1", 415),
    ("unknown sensor", [("q.npy", npy_bytes(np.zeros((2, 120, 120), np.float32)))], "s3", 422),
]


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
def test_bad_uploads_are_4xx(client, case):
    _, files, sensor, status = case
    specials = {
        "PICKLE": lambda: npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True),
        "MANYKEYS": lambda: _npz(a=np.zeros(3), b=np.zeros(3)),
        "BOMB": _bomb,
        "HUGE": _huge_npy,
        "HUGEZ": lambda: _zip_of("image.npy", _huge_npy()),
    }
    parts = [("files", (name, specials[d]() if isinstance(d, str) else d, "application/octet-stream"))
             for name, d in files]
    r = client.post(URL, files=parts, data={"sensor": sensor, "target": "any", "k": "5"})
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str) and "Traceback" not in r.text


def _huge_npy() -> bytes:
    """A few bytes whose header declares a (10^6, 10^6) float64 array (8 TB)."""
    buf = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + b"\0" * 64


def _zip_of(name: str, payload: bytes) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, payload)
    return buf.getvalue()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_pickle_payload_is_never_unpickled(client, monkeypatch):
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled an upload"))
    payload = npy_bytes(np.array([object()], dtype=object), allow_pickle=True)
    files = [("files", ("q.npy", payload, "application/octet-stream"))]
    r = client.post(URL, files=files, data={"sensor": "s1"})
    assert r.status_code == 400 and "pickle" in r.json()["detail"].lower()


def test_upload_limits():
    small = FakeRetriever(n=3)
    app = create_app(small, settings=ServiceSettings(max_upload_bytes=100_000, max_files=3))
    big = npy_bytes(np.zeros((2, 120, 120), np.float64))  # 230 kB
    with TestClient(app) as c:
        r = c.post(URL, files=[("files", ("q.npy", big, "application/octet-stream"))], data={"sensor": "s1"})
        assert r.status_code == 413 and "too large" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit must hold for streamed bodies too
            for _ in range(30):
                yield b"x" * 10_000

        r = c.post(URL, content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413
        many = [("files", (f"x_{i}.npy", b"x", "application/octet-stream")) for i in range(4)]
        r = c.post(URL, files=many, data={"sensor": "s1"})
        assert r.status_code == 422 and "too many files" in r.json()["detail"]
        r = c.post(URL, data={"sensor": "s1"})
        assert r.status_code == 422
        r = c.post(URL, content=b"not multipart", headers={"content-type": "application/json"})
        assert r.status_code in (400, 422)
