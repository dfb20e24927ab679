"""Radiometry helpers of ``csmae tile`` against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest


def test_s2_dn_to_the_bigearthnet_convention(tmp_path):
    from csmae.data.scenes.example import mtd_xml
    from csmae.data.scenes.radiometry import S2Radiometry, read_mtd_msil2a, s2_to_ben_dn

    dn = np.array([0, 1, 500, 1000, 1001, 2500, 40000], np.uint16)
    # PB >= 04.00 (offset -1000): reflectance (DN - 1000) / 10000; negatives clamp to 1, 0 stays nodata
    rad = read_mtd_msil2a(_write(tmp_path / "MTD_MSIL2A.xml", mtd_xml("05.09", -1000)))
    assert rad["B8A"].offset == pytest.approx(-0.1) and rad["B02"].scale == pytest.approx(1e-4)
    np.testing.assert_array_equal(s2_to_ben_dn(dn, rad["B02"]), [0, 1, 1, 1, 1, 1500, 39000])
    # the same through a STAC-style scale/offset, and a non-integer path (scale 2e-4: DN doubled)
    np.testing.assert_array_equal(s2_to_ben_dn(dn, S2Radiometry(scale=1e-4, offset=-0.1)),
                                  [0, 1, 1, 1, 1, 1500, 39000])
    np.testing.assert_array_equal(s2_to_ben_dn(dn, S2Radiometry(scale=2e-4, offset=0.0)),
                                  [0, 2, 1000, 2000, 2002, 5000, 65535])
    # no offset list (pre-2022): identity, the very same array
    old = read_mtd_msil2a(_write(tmp_path / "old.xml", mtd_xml("02.04", 0)))
    assert old["B02"].is_identity and s2_to_ben_dn(dn, old["B02"]) is dn


def test_s1_units_and_nodata():
    from csmae.data.scenes.radiometry import S1_DB_FLOOR, linear_to_db, s1_to_linear

    db = np.array([-12.0, 0.0, np.nan, -32768.0, -60.0], np.float32)
    lin = s1_to_linear(db, units="db", nodata=-32768.0)
    np.testing.assert_allclose(lin[[0, 1, 4]], [10 ** -1.2, 1.0, 1e-6], rtol=1e-6)
    assert np.isnan(lin[[2, 3]]).all()
    back = linear_to_db(lin)
    np.testing.assert_allclose(back, [-12.0, 0.0, S1_DB_FLOOR, S1_DB_FLOOR, S1_DB_FLOOR], atol=1e-5)
    lin2 = s1_to_linear(np.array([0.05, 0.0, -1.0, np.inf], np.float32), units="linear", nodata=None)
    assert lin2[0] == np.float32(0.05) and np.isnan(lin2[1:]).all()  # zeros (border noise) are nodata


def _write(path, text):
    path.write_text(text)
    return path
