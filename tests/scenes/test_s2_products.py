"""Zipped and multi-granule Sentinel-2 L2A products: read in place, one scene per granule."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from csmae.errors import DataError

PRODUCT = "S2B_MSIL2A_20210809T105031_N0301_R051_T31TCJ_20210809T134023"


@pytest.fixture(scope="module")
def safe(tmp_path_factory) -> Path:
    from affine import Affine
    from rasterio.crs import CRS

    from csmae.data.scenes.example import write_safe
    from tests.geo.tile_fixtures import load_real_mosaic

    m = load_real_mosaic()
    return write_safe(tmp_path_factory.mktemp("s2"), m.s2, crs=CRS.from_epsg(32631),
                      transform=Affine(10.0, 0, 415000.0, 0, -10.0, 4972000.0), product=PRODUCT,
                      baseline="03.01")


def _zip(folder: Path, dest: Path, *, compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(dest, "w", compression=compression) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{folder.name}/{p.relative_to(folder).as_posix()}")
    return dest


def test_zipped_l2a_tiles_like_the_folder(safe: Path, tmp_path: Path) -> None:
    from csmae.data.scenes import tile_scenes
    from tests.geo.tile_fixtures import store_arrays

    z = _zip(safe, tmp_path / f"{PRODUCT}.SAFE.zip", compression=zipfile.ZIP_DEFLATED)
    a = tile_scenes(tmp_path / "folder", s2=[str(safe)])
    b = tile_scenes(tmp_path / "zip", s2=[str(z)])
    assert a.patches == b.patches == 6
    (xa, ia), (xb, ib) = store_arrays(a.path), store_arrays(b.path)
    assert ia == ib and ia[0].startswith(PRODUCT[:-16])
    np.testing.assert_array_equal(xa["s2"], xb["s2"])
    assert not list(tmp_path.glob("**/*.jp2"))  # nothing unpacked next to the zip


def test_multi_granule_product_gives_one_scene_per_granule(safe: Path, tmp_path: Path) -> None:
    from csmae.data.scenes.s2_safe import safe_scenes
    from csmae.sensors import get_sensor

    two = tmp_path / f"{PRODUCT}.SAFE"
    shutil.copytree(safe, two)
    g = next((two / "GRANULE").iterdir())
    other = g.with_name(g.name.replace("T31TCJ", "T31TCK"))
    shutil.copytree(g, other)
    for f in other.rglob("*.jp2"):
        f.rename(f.with_name(f.name.replace("T31TCJ", "T31TCK")))
    for p in (two, _zip(two, tmp_path / "two.zip")):
        scenes = safe_scenes(p, get_sensor("s2").bands)
        assert [s.name for s in scenes] == [f"{PRODUCT[:-16]}_T31TCJ", f"{PRODUCT[:-16]}_T31TCK"]
        assert "T31TCK" in scenes[1].bands["B02"].path


def test_truncated_zip_and_missing_band_named(safe: Path, tmp_path: Path) -> None:
    from csmae.data.scenes import tile_scenes

    z = _zip(safe, tmp_path / "p.zip")
    cut = tmp_path / f"{PRODUCT}.SAFE.zip"
    cut.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    with pytest.raises(DataError, match="damaged or truncated"):
        tile_scenes(tmp_path / "a", s2=[str(cut)])
    part = tmp_path / "nob05"
    shutil.copytree(safe, part / safe.name)
    for f in (part / safe.name).rglob("*_B05_20m.jp2"):
        f.unlink()
    z2 = _zip(part / safe.name, tmp_path / "nob05.zip")
    with pytest.raises(DataError, match="band B05 is missing") as e:
        tile_scenes(tmp_path / "b", s2=[str(z2)])
    assert f"{z2}!" in str(e.value)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
