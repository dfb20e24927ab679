"""One query-image decoder for the CLI and the service; the sensor knowledge it uses is in the spec."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import tifffile

from csmae.data.base import upsample_band
from csmae.retrieval.grid import UNKNOWN_SENSOR_COLOUR, badge_colour
from csmae.retrieval.query_images import QueryImageError, implausible_values
from csmae.retrieval.queryfiles import read_query
from csmae.sensors import S1, S2, SENSORS, Sensor
from csmae.service.uploads import UploadedFile, UploadError, decode_upload


def _raw(sensor: Sensor, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mean = np.asarray(sensor.mean, np.float32)[:, None, None]
    std = np.asarray(sensor.std, np.float32)[:, None, None]
    x = rng.normal(size=(sensor.num_channels, 120, 120)).astype(np.float32) * std + mean
    return np.clip(np.round(x), 0, 10000) if sensor.name == "s2" else x


def _bytes(write, arr) -> bytes:
    buf = io.BytesIO()
    write(buf, arr)
    return buf.getvalue()


def _uploads(kind: str, raw: np.ndarray, sensor: Sensor) -> list[UploadedFile]:
    if kind == "npy":
        return [UploadedFile("q.npy", _bytes(np.save, raw))]
    if kind == "npz":
        buf = io.BytesIO()
        np.savez(buf, **{b: raw[i] for i, b in enumerate(sensor.bands)})
        return [UploadedFile("q.npz", buf.getvalue())]
    files = []  # GeoTIFF band files, 20 m bands at their native 60 px
    for i, b in enumerate(sensor.bands):
        step = 120 // sensor.native_side(b)
        band = raw[i][::step, ::step].astype(np.uint16 if sensor.name == "s2" else np.float32)
        files.append(UploadedFile(f"p_{b}.tif", _bytes(lambda f, a: tifffile.imwrite(f, a), band)))
    return files


@pytest.mark.parametrize("kind", ["npy", "npz", "tif"])
@pytest.mark.parametrize("sensor", [S1, S2], ids=["s1", "s2"])
def test_cli_files_and_uploads_decode_the_same(tmp_path, kind, sensor):
    raw = _raw(sensor)
    uploads = _uploads(kind, raw, sensor)
    for f in uploads:
        (tmp_path / f.name).write_bytes(f.data)
    from_disk = read_query([tmp_path / f.name for f in uploads], sensor)
    from_upload = decode_upload(uploads, sensor)
    np.testing.assert_array_equal(from_disk, from_upload)
    assert from_upload.shape == (sensor.num_channels, 120, 120) and from_upload.dtype == np.float32
    # independent reference: the pixels themselves, 20 m bands upsampled as every reader does
    for i, b in enumerate(sensor.bands):
        step = 120 // sensor.native_side(b) if kind == "tif" else 1
        ref = upsample_band(raw[i][::step, ::step]) if step > 1 else raw[i]
        np.testing.assert_allclose(from_upload[i], ref, rtol=1e-6, atol=1e-3)


def test_both_surfaces_refuse_alike_with_their_own_error(tmp_path):
    bad = np.full((2, 120, 120), 1e6, np.float32)  # no S1 band holds 10^6 dB
    (tmp_path / "q.npy").write_bytes(_bytes(np.save, bad))
    with pytest.raises(QueryImageError, match="plausible range") as cli:
        read_query([tmp_path / "q.npy"], S1)
    with pytest.raises(UploadError, match="plausible range") as upload:
        decode_upload([UploadedFile("q.npy", _bytes(np.save, bad))], S1)
    assert isinstance(cli.value, ValueError) and upload.value.status == 400
    assert str(upload.value) in str(cli.value)  # the CLI names the whole path, the upload the base name
    with pytest.raises(UploadError) as wrong_type:
        decode_upload([UploadedFile("q.png", b"\x89PNG")], S1)
    assert wrong_type.value.status == 415


def test_plausible_range_is_read_from_the_spec():
    raw = np.full((2, 120, 120), 5.0, np.float32)
    assert implausible_values(raw, S1) is None
    narrow = replace(S1, plausible_range=(-1.0, 1.0))
    assert "outside the plausible range [-1, 1] of s1 backscatter in dB" in implausible_values(raw, narrow)
    assert implausible_values(raw * 1e9, replace(S1, plausible_range=None)) is None


def test_sensor_knowledge_survives_artefacts_without_changing_them():
    for spec in SENSORS.values():
        d = spec.to_dict()
        assert set(d) == {"name", "bands", "dtype", "units", "mean", "std", "display", "description"}
        back = Sensor.from_dict(d)
        assert back == spec
        assert (back.plausible_range, back.quantity, back.badge_colour, back.skippable_query_bands) == (
            spec.plausible_range, spec.quantity, spec.badge_colour, spec.skippable_query_bands)
    assert S1.plausible_range == (-100.0, 100.0) and S2.plausible_range == (-10_000.0, 65_535.0)
    assert S1.skippable_query_bands == () and {"B01", "B09"} <= set(S2.skippable_query_bands)


def test_grid_badges_come_from_the_spec():
    assert badge_colour("s1") == S1.badge_colour == "#d95f02"
    assert badge_colour("s2") == S2.badge_colour == "#1b9e77"
    assert badge_colour("s9") == UNKNOWN_SENSOR_COLOUR
