"""The TIFF band reader (fast baseline path + bounded strip/tile decoder) against tifffile.imread and
GDAL-written files; decompression bombs and oversized images are refused before decoding."""

from __future__ import annotations

import csv
import lzma
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from csmae.data import DataError
from csmae.data.tiff import MAX_FILE_BYTES, read_band, read_tiff
from csmae.data.tiff_codecs import TooLargeError

from . import tiff_bombs as bombs


def test_every_real_band_file_equals_tifffile(shared_data: Path) -> None:
    files = sorted((shared_data / "bigearthnet-v1").glob("*/*/*.tif"))
    assert len(files) == 6 * 12 + 6 * 2
    for f in files:
        ours, ref = read_tiff(f), tifffile.imread(f)
        assert ours.dtype == ref.dtype and ours.shape == ref.shape, f
        np.testing.assert_array_equal(ours, ref)
        assert ours.flags.writeable


@pytest.mark.parametrize("kw", [
    {"byteorder": ">"},                      # big-endian, baseline path
    {"compression": "zlib"},                 # compressed: tifffile path
    {"tile": (16, 16)},                      # tiled: tifffile path
    {"rowsperstrip": 7},                     # many strips
    {"bigtiff": True},                       # BigTIFF: tifffile path
])
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_layout_variants(tmp_path: Path, kw: dict, dtype: str) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.random((48, 48)) * 5000).astype(dtype)
    p = tmp_path / "b.tif"
    tifffile.imwrite(p, arr, **kw)
    out = read_tiff(p)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, arr)


def test_read_band_checks(tmp_path: Path) -> None:
    p = tmp_path / "x_B05.tif"
    tifffile.imwrite(p, np.ones((60, 60), np.uint16))
    assert read_band(p, band="B05", expected_side=60, patch="x").shape == (60, 60)
    with pytest.raises(DataError, match=r"x_B05\.tif: patch x: band B05 has shape \(60, 60\), expected"):
        read_band(p, band="B05", expected_side=120, patch="x")


# --- every layout GDAL writes decodes to the written pixels (GDAL is the independent encoder) ---

GDAL_CODECS = [None, "lzw", "deflate", "zstd", "lzma", "packbits"]


def _gdal_tiff(arr: np.ndarray, **opts) -> bytes:
    import warnings

    from rasterio.io import MemoryFile

    with MemoryFile() as mem:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # not georeferenced
            with mem.open(driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1,
                          dtype=arr.dtype.name, **opts) as dst:
                dst.write(arr[None])
        return bytes(mem.read())


@pytest.mark.parametrize("codec", GDAL_CODECS)
def test_gdal_codecs_predictors_tiles_and_byte_orders(tmp_path: Path, codec: str | None) -> None:
    pytest.importorskip("rasterio")
    if codec == "zstd":
        pytest.importorskip("zstandard")
    rng = np.random.default_rng(1)
    checked = 0
    dtypes = ("uint16", "int16", "float32") + (("float64", "uint8") if codec in (None, "deflate") else ())
    for dtype in dtypes:
        arr = ((rng.random((120, 120)) - 0.3) * 4000).astype(dtype)
        arr[:10] = arr[0, 0]  # runs, so that run-length codecs have something to do
        preds = [1] if codec in (None, "packbits") else [1, 2] + ([3] if arr.dtype.kind == "f" else [])
        for pred in preds:
            for tiled in (False, True):
                for endian in ("LITTLE", "BIG"):
                    opts: dict = {"ENDIANNESS": endian}
                    if codec:
                        opts["compress"] = codec
                    if pred != 1:
                        opts["predictor"] = pred
                    if tiled:
                        opts.update(tiled=True, blockxsize=64, blockysize=32)
                    else:
                        opts["blockysize"] = 7  # several strips, the last one short
                    p = tmp_path / "b.tif"
                    p.write_bytes(_gdal_tiff(arr, **opts))
                    out = read_tiff(p)
                    assert out.dtype == arr.dtype and out.dtype.isnative, (dtype, pred, tiled, endian)
                    np.testing.assert_array_equal(out, arr, err_msg=str((dtype, pred, tiled, endian)))
                    checked += 1
    assert checked >= 12


# --- decompression bombs are refused before they are decoded ----------------------------------

def _bomb_payload(codec: str) -> tuple[int, bytes]:
    if codec == "deflate":
        return bombs.DEFLATE, bombs.deflate_zeros(512 * bombs.MiB)
    if codec == "lzma":
        return bombs.LZMA, bombs.lzma_zeros(1024 * bombs.MiB)
    if codec == "zstd":
        pytest.importorskip("zstandard")
        return bombs.ZSTD, bombs.zstd_zeros(1024 * bombs.MiB)
    if codec == "lzw":
        pytest.importorskip("rasterio")
        return bombs.LZW, bombs.lzw_zeros_from_gdal(4096)  # 16 MiB from 14 kB
    if codec == "packbits-long":  # longer than any valid encoding of the segment
        return bombs.PACKBITS, bombs.packbits_zeros(64 * bombs.MiB)
    assert codec == "packbits"  # short enough to be decoded, but inflating past the segment
    return bombs.PACKBITS, bombs.packbits_zeros(28_800 * 2)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("codec", ["deflate", "lzma", "zstd", "lzw", "packbits", "packbits-long"])
@pytest.mark.parametrize("layout", ["strip", "tile"])
def test_bomb_strip_or_tile_is_refused_without_decoding(tmp_path: Path, codec: str, layout: str) -> None:
    compression, payload = _bomb_payload(codec)
    kw: dict = {"tile": (128, 128)} if layout == "tile" else {}
    p = tmp_path / "x_B02.tif"
    p.write_bytes(bombs.tiff_with_segments([payload], compression=compression, **kw))
    assert p.stat().st_size < 3_000_000

    def read() -> None:
        match = rf"x_B02\.tif: patch x: {layout} 0.*(decompresses to more than|more than a)"
        with pytest.raises(TooLargeError, match=match):
            read_band(p, band="B02", expected_side=120, patch="x")

    assert _peak_bytes(read) < 8 * bombs.MiB  # nothing near the 16 MiB - 1 GiB payload was allocated


@pytest.mark.parametrize("compression", [bombs.NONE, bombs.DEFLATE])
def test_huge_declared_image_is_refused_before_decoding(tmp_path: Path, compression: int) -> None:
    p = tmp_path / "big.tif"
    strip = zlib.compress(bytes(1000)) if compression == bombs.DEFLATE else bytes(1000)
    p.write_bytes(bombs.tiff_with_segments([strip], width=100_000, height=100_000, compression=compression))

    def read() -> None:
        match = r"big\.tif: the TIFF declares a 100000x100000 px image; at most 1200x1200"
        with pytest.raises(DataError, match=match):
            read_tiff(p)

    assert _peak_bytes(read) < 2 * bombs.MiB
    # a band reader accepts nothing larger than the band's side
    p2 = tmp_path / "x_B05.tif"
    tifffile.imwrite(p2, np.zeros((120, 120), np.uint16), compression="zlib")
    match = r"x_B05\.tif: patch x: the TIFF declares a 120x120 px image; at most 60x60"
    with pytest.raises(DataError, match=match):
        read_band(p2, band="B05", expected_side=60, patch="x")


def test_corrupt_and_unsupported_segments(tmp_path: Path) -> None:
    a = np.arange(120 * 120, dtype=np.uint16).reshape(120, 120)
    cases = [
        ([b"\x78\x9c" + b"\xff" * 50], bombs.DEFLATE, {}, "corrupt Deflate data"),
        ([lzma.compress(a.tobytes())[:200]], bombs.LZMA, {}, r"strip 0 holds \d+ bytes, 28800 expected"),
        ([b"junk" * 10], bombs.LZMA, {}, "corrupt LZMA data"),
        ([a.tobytes()], 7, {}, "unsupported TIFF compression 7"),
        ([a.tobytes()], bombs.NONE, {"predictor": 5}, "predictor 5 is not supported"),
        ([zlib.compress(b"")], bombs.DEFLATE, {"tile": (4096, 4096)}, "tiles of 4096x4096 px do not fit"),
        ([zlib.compress(a.tobytes())], bombs.DEFLATE, {"dtype": "complex64"}, "unsupported TIFF pixel type"),
    ]
    for segments, compression, kw, match in cases:
        p = tmp_path / "c.tif"
        p.write_bytes(bombs.tiff_with_segments(segments, compression=compression, **kw))
        with pytest.raises(DataError, match=match):
            read_tiff(p)
    # a file larger than any band could be is not read at all
    p = tmp_path / "huge.tif"
    with open(p, "wb") as f:
        f.write(b"II*\x00")
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(DataError, match="over the .*-byte limit"):
        read_tiff(p)


def test_prepare_skips_or_stops_on_a_bomb_band(shared_data: Path, tmp_path: Path) -> None:
    """`csmae prepare` on a v1 folder whose band file is a 256 MiB bomb: reported and skipped
    (on_error="skip") or stopped with the file named (on_error="stop"), never decoded."""
    from csmae.data import open_dataset
    from csmae.data.prepare import prepare

    from .test_bad_input import S2, writable_copy

    root = writable_copy(shared_data / "bigearthnet-v1", tmp_path / "v1")
    s2_root, s1_root = root / "BigEarthNet-v1.0", root / "BigEarthNet-S1-v1.0"
    bomb = s2_root / S2 / f"{S2}_B04.tif"
    payload = bombs.deflate_zeros(256 * bombs.MiB)
    bomb.write_bytes(bombs.tiff_with_segments([payload], compression=bombs.DEFLATE))
    sources = [str(s2_root), str(s1_root)]

    def stop() -> None:
        with pytest.raises(DataError, match=rf"{S2}_B04\.tif: patch {S2}: strip 0 decompresses to more than"):
            prepare(sources, tmp_path / "stop", on_error="stop", chunk_size=2)

    assert _peak_bytes(stop) < 64 * bombs.MiB
    res = prepare(sources, tmp_path / "store", on_error="skip", chunk_size=2)
    n = len(open_dataset(*sources, on_error="skip"))
    assert res.skipped == 1 and res.pairs == n - 1
    rows = list(csv.DictReader(open(tmp_path / "store" / "skipped.csv")))
    assert [r["patch"] for r in rows] == [S2]
    assert "decompresses to more than" in rows[0]["reason"] and "B04" in rows[0]["file"] + rows[0]["reason"]
