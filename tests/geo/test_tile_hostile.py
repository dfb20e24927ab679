"""``csmae tile`` against the attacks of issue #21: nothing outside the artefact touched, the
product's own checksums checked, implausible numbers refused, bounded work, no tracebacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.geo.tile_fixtures import load_real_mosaic, write_aligned

PRODUCT = "S2A_MSIL2A_20170613T101031_N0204_R022_T33UUP_20170613T101032"


@pytest.fixture(scope="module")
def mosaic():
    return load_real_mosaic()


@pytest.fixture(scope="module")
def base(tmp_path_factory, mosaic) -> Path:
    root = tmp_path_factory.mktemp("base")
    write_aligned(root, mosaic)
    return root


@pytest.fixture()
def scene(tmp_path, base) -> Path:
    shutil.copytree(base, tmp_path / "scene")
    return tmp_path / "scene"


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
