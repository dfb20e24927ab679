"""Acquisition-time parsing and footprint geometry on synthetic grids (pyproj as the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from csmae.geo.keys import iso_utc, time_from_name


@pytest.mark.parametrize("value, want", [
    ("2017-06-13 10:10:31", "2017-06-13T10:10:31Z"),
    ("2017-06-13T16:50:43", "2017-06-13T16:50:43Z"),
    ("2017-06-13T18:50:43+02:00", "2017-06-13T16:50:43Z"),
    ("2017-06-13T16:50:43Z", "2017-06-13T16:50:43Z"),
    ("20170924T93020", None),  # 5-digit v1 stamps are ambiguous (see test_time_from_name)
    ("20170613T101031", "2017-06-13T10:10:31Z"),
    ("not a date", None), ("", None), (None, None),
])
def test_iso_utc(value, want):
    assert iso_utc(value) == want


def test_time_from_name():
    # real v1 names with 5-digit stamps: one reads as 09:30:20 (right), the other cannot be 09:41:56
    # (what its JSON says) by any padding: both give None, never a guess
    assert time_from_name("S2B_MSIL2A_20180204T94161_57_38") is None
    assert time_from_name("S2B_MSIL2A_20170924T93020_69_24") is None
    assert time_from_name("S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48") == "2017-06-13T16:50:43Z"
    assert time_from_name("no stamp") is None


def test_footprint_matches_pyproj_corners_and_pixel_edges():
    import pyproj
    import shapely

    from csmae.geo.footprint import footprint_wkb

    tr = (10.0, 0.0, 499980.0, 0.0, -10.0, 4200000.0)
    poly = shapely.from_wkb(footprint_wkb("EPSG:32633", tr, 120, 60))
    t = pyproj.Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    lon, lat = t.transform([499980, 501180, 501180, 499980], [4200000, 4200000, 4199400, 4199400])
    ref = np.column_stack([lon, lat])
    got = np.asarray(poly.exterior.coords)[:-1]
    d = np.abs(got[:, None] - ref[None]).max(axis=2)
    assert d.min(axis=1).max() < 1e-9 and poly.exterior.is_ccw
    assert 14 < poly.centroid.x < 16 and 37 < poly.centroid.y < 38  # lon, lat order


def test_bad_crs_is_a_data_error():
    from csmae.data.base import DataError
    from csmae.geo.footprint import footprint_wkb

    with pytest.raises(DataError, match="coordinate reference system"):
        footprint_wkb("synthetic (csmae synth)", (10, 0, 0, 0, -10, 0))
