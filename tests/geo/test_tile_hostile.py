"""``csmae tile`` against the attacks of issue #21: nothing outside the artefact touched, the
product's own checksums checked, implausible numbers refused, bounded work, no tracebacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = "S2A_MSIL2A_20170613T101031_N0204_R022_T33UUP_20170613T101032"


@pytest.fixture(scope="module")
def safe_base(tmp_path_factory, mosaic) -> Path:
    from csmae.data.scenes.example import write_safe

    return write_safe(tmp_path_factory.mktemp("safe"), mosaic.s2, crs=mosaic.crs,
                      transform=mosaic.transform, product=PRODUCT)


@pytest.fixture()
def safe(tmp_path, safe_base) -> Path:
    return Path(shutil.copytree(safe_base, tmp_path / safe_base.name))


def _tile(capsys, *args: str) -> tuple[int, str, str]:
    from csmae.cli import main

    rc = main(["tile", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _inputs(scene: Path) -> list[str]:
    return ["--s2", str(scene / "s2"), "--s1", str(scene / "s1")]


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _victim(root: Path) -> Path:
    v = root / "victim"
    v.mkdir()
    (v / "data.txt").write_text("d\n")
    return v


# --- 1, 2: nothing that is not a csmae artefact of the same kind is deleted -----------------------
def test_a_symlinked_partial_is_refused_and_its_target_kept(capsys, scene, tmp_path):
    v = _victim(tmp_path)
    (tmp_path / "x.partial").symlink_to(v)
    rc, _, err = _tile(capsys, *_inputs(scene), "--out", str(tmp_path / "x"))
    assert rc == 1 and "x.partial is a symbolic link" in err and "nothing was deleted" in err, err
    assert sorted(p.name for p in v.iterdir()) == ["data.txt"]  # not even a lock file


def test_a_partial_of_user_files_is_refused(capsys, scene, tmp_path):
    part = tmp_path / "x.partial"
    part.mkdir()
    (part / "thesis.tex").write_text("t")
    rc, _, err = _tile(capsys, *_inputs(scene), "--out", str(tmp_path / "x"))
    assert rc == 1 and "x.partial exists and has no .csmae-partial.json" in err, err
    assert sorted(p.name for p in part.iterdir()) == ["thesis.tex"]


def test_a_foreign_partial_is_refused_before_anything_looks_inside_it(capsys, scene, tmp_path, monkeypatch):
    """The refusal comes before planning and the disk-size check (which reads a partial's records)."""
    import csmae.data.scenes.bounds as bounds
    import csmae.data.scenes.run as run

    looked: list[str] = []
    monkeypatch.setattr(bounds, "_allocated", lambda folder: looked.append(str(folder)) or 0)
    monkeypatch.setattr(run, "plan_tiling", lambda **kw: looked.append("plan") or (_ for _ in ()).throw(
        AssertionError("planned")))
    part = tmp_path / "x.partial"
    part.mkdir()
    (part / "s2.npy").write_bytes(b"mine")
    rc, _, err = _tile(capsys, *_inputs(scene), "--out", str(tmp_path / "x"))
    assert rc == 1 and "has no .csmae-partial.json" in err, err
    assert looked == []


def test_overwrite_replaces_only_a_store(capsys, scene, tmp_path):
    v = _victim(tmp_path)
    rc, _, err = _tile(capsys, *_inputs(scene), "--out", str(v), "--overwrite")
    assert rc == 1 and "victim is not a csmae store" in err and "nothing was replaced" in err, err
    assert sorted(p.name for p in v.iterdir()) == ["data.txt"]
    assert not (tmp_path / "victim.partial").exists()
    out = tmp_path / "store"
    assert _tile(capsys, *_inputs(scene), "--out", str(out))[0] == 0
    assert _tile(capsys, *_inputs(scene), "--out", str(out), "--overwrite")[0] == 0


# --- 9: the product's own checksums ----------------------------------------------------------------
def test_a_clean_safe_is_checked_and_recorded(capsys, safe, tmp_path):
    rc, _, err = _tile(capsys, "--s2", str(safe), "--out", str(tmp_path / "st"))
    assert rc == 0, err
    (entry,) = json.loads((tmp_path / "st" / "manifest.json").read_text())["tiling"]["product_checksums"]
    assert entry["checked"] is True and entry["algorithms"] == ["SHA3-256"]
    assert entry["files_checked"] == 11 and entry["unlisted"] == []  # the 10 bands read + MTD_MSIL2A.xml


def _corrupt(path: Path) -> None:
    import numpy as np

    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def test_a_corrupt_jp2_is_refused_by_its_manifest_checksum(capsys, safe, tmp_path):
    b02 = next(safe.rglob("*_B02_10m.jp2"))
    _corrupt(b02)
    rc, _, err = _tile(capsys, "--s2", str(safe), "--out", str(tmp_path / "st"))
    assert rc == 1 and "SHA3-256 checksum mismatch" in err and str(b02) in err, err
    assert not (tmp_path / "st").exists() and not (tmp_path / "st.partial").exists()
    rc, _, err = _tile(capsys, "--s2", str(safe), "--out", str(tmp_path / "st"), "--no-product-checksums")
    assert rc == 0, err
    (entry,) = json.loads((tmp_path / "st" / "manifest.json").read_text())["tiling"]["product_checksums"]
    assert entry == {"product": str(safe), "checked": False, "reason": "--no-product-checksums"}


def test_md5_checksums_and_zipped_products(safe, tmp_path):
    import zipfile

    from csmae.data.base import DataError
    from csmae.data.scenes.example import write_manifest_safe
    from csmae.data.scenes.product_checksums import verify_product_checksums

    write_manifest_safe(safe, "MD5")
    bands = sorted(str(p.relative_to(safe)) for p in safe.rglob("*.jp2"))
    got = verify_product_checksums(safe, bands)
    assert set(got.checked.values()) == {"MD5"} and len(got.checked) == len(bands) == 10
    zpath = tmp_path / "product.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in safe.rglob("*"):
            if p.is_file():
                zf.write(p, f"{safe.name}/{p.relative_to(safe).as_posix()}")
    assert len(verify_product_checksums(zpath, bands).checked) == 10
    _corrupt(safe / bands[0])
    with pytest.raises(DataError, match="MD5 checksum mismatch") as e:
        verify_product_checksums(safe, bands)
    assert bands[0] in str(e.value)
    with pytest.raises(DataError, match="outside the product"):
        verify_product_checksums(safe, ["../../etc/passwd"])


# --- 10: radiometry numbers ------------------------------------------------------------------------
@pytest.mark.parametrize(("find", "put", "says"), [
    (">10000</BOA_QUANTIFICATION_VALUE>", ">0</BOA_QUANTIFICATION_VALUE>",
     "BOA_QUANTIFICATION_VALUE 0 is implausible"),
    (">10000</BOA_QUANTIFICATION_VALUE>", ">ten</BOA_QUANTIFICATION_VALUE>",
     "BOA_QUANTIFICATION_VALUE is 'ten': not a number"),
    ('<BOA_ADD_OFFSET band_id="1">-1000<', '<BOA_ADD_OFFSET band_id="1">1e308<', "offset 1e+304"),
    ('<BOA_ADD_OFFSET band_id="1">-1000<', '<BOA_ADD_OFFSET band_id="1">nan<', "not a finite number"),
])
def test_implausible_mtd_numbers_are_refused(capsys, tmp_path, mosaic, find, put, says):
    from csmae.data.scenes.example import write_manifest_safe, write_safe

    safe = write_safe(tmp_path, mosaic.s2, crs=mosaic.crs, transform=mosaic.transform,
                      product=PRODUCT.replace("N0204", "N0509"), baseline="05.09", offset=-1000)
    mtd = safe / "MTD_MSIL2A.xml"
    assert find in mtd.read_text()
    mtd.write_text(mtd.read_text().replace(find, put))
    write_manifest_safe(safe)  # the product's own checksums match the edited metadata
    rc, _, err = _tile(capsys, "--s2", str(safe), "--out", str(tmp_path / "st"))
    assert rc == 1 and says in err and str(mtd) in err and "Traceback" not in err, err


def _stac_s2(tmp_path: Path, mosaic, raster_bands: dict) -> Path:
    from datetime import UTC, datetime

    from csmae.data.scenes.example import write_band_files, write_stac_item

    files = write_band_files(tmp_path / "data", mosaic.s2, crs=mosaic.crs, transform=mosaic.transform)
    by_band = {f.name.split("_")[2]: f for f in files}
    return write_stac_item(tmp_path / "items" / "s2.json", item_id="S2A_33UUP_20170613_0_L2A",
                           when=datetime(2017, 6, 13, 10, 10, 31, tzinfo=UTC), bbox=[12.7, 48.2, 12.8, 48.3],
                           assets=by_band, extra={b: {"raster:bands": [raster_bands]} for b in by_band})


@pytest.mark.parametrize(("rb", "says"), [
    ({"scale": 0, "offset": 1e308}, "scale 0 reflectance per DN is implausible"),
    ({"scale": 0.0001, "offset": 1e308}, "offset 1e+308 (reflectance) is implausible"),
    ({"scale": 0.0001, "offset": "-0.1x"}, "offset is '-0.1x': not a number"),
])
def test_implausible_stac_scale_offset_are_refused(capsys, tmp_path, mosaic, rb, says):
    item = _stac_s2(tmp_path, mosaic, rb)
    rc, _, err = _tile(capsys, "--stac", str(item), "--out", str(tmp_path / "st"))
    assert rc == 1 and says in err and str(item) in err and "raster:bands of asset" in err, err
    assert not (tmp_path / "st").exists()


def test_an_implausible_boa_offset_option_is_refused(capsys, scene, tmp_path):
    rc, _, err = _tile(capsys, *_inputs(scene), "--out", str(tmp_path / "st"), "--boa-offset", "1e308")
    assert rc == 1 and "--boa-offset 1e+308 DN is implausible" in err, err


# --- 11: integer S1 is DN, whatever its tags say ---------------------------------------------------
@pytest.mark.parametrize("dtype", ["int16", "uint16"])
def test_integer_s1_with_a_units_tag_is_refused(capsys, scene, mosaic, dtype):
    import numpy as np

    from csmae.data.scenes.example import _write

    for p in list((scene / "s1").iterdir()):
        p.unlink()
        _write(p, [np.full((240, 360), 300, dtype)], crs=mosaic.crs, transform=mosaic.transform,
               tags={"units": "dB"})
    for extra in ((), ("--s1-units", "db")):
        rc, _, err = _tile(capsys, *_inputs(scene), "--out", str(scene.parent / "st"), *extra)
        assert rc == 1 and f"S1 band is {dtype}: uncalibrated DN, not backscatter" in err, err
        assert str(scene / "s1") in err


# --- 13: bounded work ------------------------------------------------------------------------------
HOSTILE_SIDE = 200_000


def _hostile_stack(path: Path, mosaic) -> Path:
    """A 10-band S2 stack declaring 200000 x 200000 px (sparse: a few KB on disk)."""
    import numpy as np
    import rasterio

    from csmae.sensors import get_sensor

    bands = get_sensor("s2").bands
    with rasterio.open(path, "w", driver="GTiff", width=HOSTILE_SIDE, height=HOSTILE_SIDE, count=len(bands),
                       dtype="uint16", crs=mosaic.crs, transform=mosaic.transform, tiled=True,
                       blockxsize=4096, blockysize=4096, compress="deflate", sparse_ok=True,
                       bigtiff="YES") as dst:
        for i, b in enumerate(bands, start=1):
            dst.set_band_description(i, b)
        dst.write(np.full((1, 120, 120), 1000, np.uint16), indexes=[1],
                  window=rasterio.windows.Window(0, 0, 120, 120))
    assert path.stat().st_size < 4 * 2**20
    return path


#: runs a command and reports its exit status, stderr and peak RSS (its own children only)
_MEASURE = """
import json, resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=300)
print(json.dumps({"rc": p.returncode, "err": p.stderr,
                  "peak_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def _measured(cmd: list[str]) -> dict:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, timeout=400,
                       env=_env())
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_a_raster_declaring_200000_px_is_refused_in_bounded_memory(tmp_path, mosaic):
    import sys

    stack = _hostile_stack(tmp_path / "T33UUP_20170613T101031_stack.tif", mosaic)
    out = tmp_path / "st"
    cmd = [sys.executable, "-m", "csmae", "tile", "--s2", str(stack), "--out", str(out)]
    got = _measured(cmd)
    assert got["rc"] == 1, got["err"]
    assert "declares 200,000 x 200,000 pixels: larger than any S2 product" in got["err"], got["err"]
    assert str(stack) in got["err"] and "Traceback" not in got["err"]
    assert not out.exists() and not out.with_name("st.partial").exists()
    assert got["peak_kb"] < 2**20, f"peak RSS {got['peak_kb'] / 2**10:.0f} MB"  # ru_maxrss is in KB
    need = (((HOSTILE_SIDE - 120) // 120 + 1) ** 2) * 120 * 120 * 4 * 10  # float32 records of 10 bands
    if shutil.disk_usage(tmp_path).free < need:  # --yes: still never past the disk
        got = _measured([*cmd, "--yes"])
        assert got["rc"] == 1 and "more than the free disk" in got["err"], got["err"]
        assert "GB of records to write" in got["err"] and got["peak_kb"] < 2**20
        assert not out.exists() and not out.with_name("st.partial").exists()


def test_a_fifo_named_like_a_band_is_refused_not_waited_on(capsys, scene, tmp_path):
    import os

    band = next((scene / "s2").glob("*_B02_*.tif"))
    band.unlink()
    os.mkfifo(band)
    rc, _, err = _tile(capsys, *_inputs(scene), "--out", str(tmp_path / "st"))
    assert rc == 1 and "not a regular file (a FIFO)" in err and str(band) in err, err
    rc, _, err = _tile(capsys, "--s2", str(band), "--out", str(tmp_path / "st"))
    assert rc == 1 and "not a regular file (a FIFO)" in err, err


def test_a_tiny_stride_says_what_it_would_write_and_needs_yes(capsys, scene, tmp_path):
    rc, _, err = _tile(capsys, *_inputs(scene), "--out", str(tmp_path / "st"), "--stride", "2")
    assert rc == 1, err
    assert "7,381 patches of" in err and "GB of records to write" in err, err
    assert "--stride 2 stores every pixel 3,600 times" in err and "pass --yes" in err, err
    assert not (tmp_path / "st").exists() and not (tmp_path / "st.partial").exists()
    rc, _, err = _tile(capsys, *_inputs(scene), "--out", str(tmp_path / "st"), "--stride", "30")
    assert rc == 0, err  # 16 times: within the bound


# --- 12: a resumed tile re-checks the records it committed ----------------------------------------
def test_records_altered_in_the_partial_are_redone_on_resume(scene, tmp_path):
    import subprocess
    import sys

    import numpy as np

    from csmae.data.scenes import tile_scenes
    from tests.geo.tile_fixtures import store_arrays

    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "csmae", "tile", *_inputs(scene), "--out", str(out)]
    killed = subprocess.run(cmd, env={**_env(), "CSMAE_TILE_EXIT_AFTER_CHUNKS": "1"}, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == 17, killed.stderr
    rec = np.load(out.with_name("store.partial") / "s2.npy", mmap_mode="r+")
    rec[0, 0, :10, :10] = 12345  # a committed record altered behind the journal's back
    rec.flush()
    del rec
    again = tile_scenes(out, s2=[str(scene / "s2")], s1=[str(scene / "s1")])
    assert (again.chunks, again.chunks_resumed) == (2, 0)  # the altered strip was redone
    tile_scenes(tmp_path / "fresh", s2=[str(scene / "s2")], s1=[str(scene / "s1")])
    a, ids_a = store_arrays(out)
    b, ids_b = store_arrays(tmp_path / "fresh")
    assert ids_a == ids_b
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# --- 14: a hostile href ----------------------------------------------------------------------------
@pytest.mark.parametrize(("href", "says"), [
    ("a" * 200_000, "has an href of 200,000 characters (more than 4096)"),
    ("a" * 4000, "not a usable path (File name too long)"),
])
def test_a_huge_stac_href_is_a_clear_error(capsys, tmp_path, href, says):
    d = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "bbox": [0, 0, 0, 0],
         "geometry": {"type": "Point", "coordinates": [0, 0]},
         "properties": {"datetime": "2017-06-13T10:10:31Z"},
         "links": [], "assets": {"vv": {"href": href}, "vh": {"href": "b.tif"}}}
    item = tmp_path / "item.json"
    item.write_text(json.dumps(d))
    rc, _, err = _tile(capsys, "--stac", str(item), "--out", str(tmp_path / "st"))
    assert rc == 1 and says in err and str(item) in err and "Traceback" not in err, err[:500]
    assert len(err) < 1000  # the href is not echoed in full
