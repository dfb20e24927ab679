"""Finding and checking a real GRD product: folder and zip, and the products and files it refuses."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from csmae.data.scenes.grd_safe import is_grd_product, open_grd
from csmae.data.scenes.grd_tables import read_annotation, read_calibration, read_noise
from csmae.errors import DataError
from tests.scenes.grd_fixtures import PRODUCT, copy_xmls, edit_member

CAL_VV = ("annotation/calibration/calibration-s1a-iw-grd-vv-20210809t173953-20210809t174018-039156-"
          "049f13-001.xml")


@pytest.fixture
def safe(tmp_path: Path) -> Path:
    return copy_xmls(tmp_path)


def _zip(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{folder.name}/{p.relative_to(folder).as_posix()}")
    return dest


def test_real_product_folder_and_zip_read_the_same(safe: Path, tmp_path: Path) -> None:
    a = open_grd(safe)
    assert (a.mode, a.product_type, a.resolution, a.ipf, a.polarisations) == ("IW", "GRD", "H", (3, 31),
                                                                              ("VH", "VV"))
    assert a.start is not None and a.start.isoformat().startswith("2021-08-09T17:39:53")
    z = open_grd(_zip(safe, tmp_path / f"{PRODUCT}.SAFE.zip"))
    assert z.name == a.name == PRODUCT and z.files == a.files
    assert z.gdal_path(z.files["VV"].measurement).startswith("/vsizip/")
    for pol in ("VV", "VH"):
        assert (read_annotation(z, pol).gcps == read_annotation(a, pol).gcps).all()
        ann = read_annotation(a, pol)
        assert (ann.samples, ann.lines, ann.gcps.shape) == (26144, 16676, (210, 6))
        assert len(read_calibration(a, pol, "gamma0").lines) == 27
        noise = read_noise(a, pol)
        assert len(noise.range.lines) == 26 and [b.swath for b in noise.azimuth] == ["IW1", "IW2", "IW3"]
    assert is_grd_product(safe) and is_grd_product(tmp_path / f"{PRODUCT}.SAFE.zip")
    assert not is_grd_product(tmp_path / "S1A_IW_GRDH_1SDV_20170613T165043_VV.tif")


@pytest.mark.parametrize("old,new,words", [
    ("<s1sarl1:productType>GRD</s1sarl1:productType>", "<s1sarl1:productType>SLC</s1sarl1:productType>",
     "a SLC product: only GRD"),
    ("<s1sarl1:mode>IW</s1sarl1:mode>", "<s1sarl1:mode>EW</s1sarl1:mode>", "an EW mode product: only IW"),
])
def test_slc_and_ew_are_refused_naming_the_product(safe: Path, old: str, new: str, words: str) -> None:
    edit_member(safe, "manifest.safe", old, new)
    with pytest.raises(DataError, match=words) as e:
        open_grd(safe)
    assert str(safe) in str(e.value)


def test_hh_hv_is_refused(safe: Path) -> None:
    m = safe / "manifest.safe"
    m.write_text(m.read_text().replace(">VV<", ">HH<").replace(">VH<", ">HV<"))
    with pytest.raises(DataError, match="polarisations HH/HV: VV and VH are both needed"):
        open_grd(safe)


@pytest.mark.parametrize("member", [CAL_VV, "annotation/s1a-iw-grd-vh-20210809t173953-20210809t174018-039156-"
                                    "049f13-002.xml", "manifest.safe"])
def test_missing_annotation_calibration_or_manifest_named(safe: Path, member: str) -> None:
    (safe / member).unlink()
    with pytest.raises(DataError, match="missing") as e:
        open_grd(safe)
    assert member in str(e.value)


def test_missing_member_in_zip_and_truncated_zip(safe: Path, tmp_path: Path) -> None:
    (safe / CAL_VV).unlink()
    z = _zip(safe, tmp_path / "a.zip")
    with pytest.raises(DataError, match="missing from the zipped product") as e:
        open_grd(z)
    assert f"{z}!{PRODUCT}.SAFE/{CAL_VV}" in str(e.value)
    data = z.read_bytes()
    cut = tmp_path / f"{PRODUCT}.SAFE.zip"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="damaged or truncated"):
        open_grd(cut)


def test_entity_expansion_and_external_entities_refused(safe: Path) -> None:
    cal = safe / CAL_VV
    body = cal.read_text().split("\n", 1)[1]
    bomb = ('<?xml version="1.0"?>\n<!DOCTYPE calibration [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n')
    cal.write_text(bomb + body.replace("<calibration>", "<calibration><x>&b;</x>", 1))
    product = open_grd(safe)
    with pytest.raises(DataError, match="refused XML: EntitiesForbidden") as e:
        read_calibration(product, "VV", "sigma0")
    assert CAL_VV in str(e.value)
    ext = ('<?xml version="1.0"?>\n<!DOCTYPE calibration [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n')
    cal.write_text(ext + body.replace("<calibration>", "<calibration><x>&x;</x>", 1))
    with pytest.raises(DataError, match="refused XML"):
        read_calibration(product, "VV", "sigma0")


def test_manifest_href_outside_the_product_is_refused(safe: Path) -> None:
    edit_member(safe, "manifest.safe", 'href="./annotation/calibration/calibration-s1a-iw-grd-vv',
                'href="../../annotation/calibration/calibration-s1a-iw-grd-vv')
    with pytest.raises(DataError, match="outside the product"):
        open_grd(safe)


def test_malformed_lut_named(safe: Path) -> None:
    edit_member(safe, CAL_VV, "<sigmaNought count=\"655\">", "<sigmaNought count=\"655\">x ")
    with pytest.raises(DataError, match="non-number") as e:
        read_calibration(open_grd(safe), "VV", "sigma0")
    assert CAL_VV in str(e.value)
