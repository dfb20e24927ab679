"""The TIFF band reader (fast baseline path + tifffile fallback) against tifffile.imread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from csmae.data import DataError
from csmae.data.tiff import read_band, read_tiff


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
