"""Acquisition keys from real product names (the Sentinel naming conventions, written out by hand)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from csmae.geo.acquisition import acquisition_of


def test_s1_slices_of_one_datatake_share_a_key_and_other_passes_do_not():
    # the real product in ../shared/data/s1-grd and the next slice of the same datatake (049F13)
    one = acquisition_of("S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13_6FF8")
    two = acquisition_of("S1A_IW_GRDH_1SDV_20210809T174018_20210809T174043_039156_049F13_1A2B")
    other = acquisition_of("S1A_IW_GRDH_1SDV_20210821T173954_20210821T174019_039331_04A4F1_0C55")
    assert one == two == "S1A datatake 049F13" and other == "S1A datatake 04A4F1"
    assert acquisition_of("S1A_IW_SLC__1SDV_20210809T173953_20210809T174018_039156_049F13_6FF8") == one


def test_s2_tiles_of_one_datatake_share_the_sensing_start_whatever_the_baseline():
    tile_time = datetime(2023, 6, 13, 10, 20, 5, tzinfo=UTC)
    a = acquisition_of("S2A_MSIL2A_20230613T101031_N0509_R022_T33UUP", tile_time)
    b = acquisition_of("S2A_MSIL2A_20230613T101031_N0500_R022_T33UVP_20230613T141227")
    pc = acquisition_of("S2A_MSIL2A_20230613T101031_R022_T33UVP_20230614T031702")  # Planetary Computer id
    assert a == b == pc == "2023-06-13T10:10:31Z"  # the name's datatake start, not the tile's own time
    assert acquisition_of("S2B_MSIL2A_20230618T101029_N0509_R022_T33UVP") == "2023-06-18T10:10:29Z"


def test_other_names_use_the_time_to_the_second_and_no_time_gives_none():
    when = datetime(2023, 6, 13, 10, 10, 31, 480000, tzinfo=UTC)
    assert acquisition_of("T33UUP_20230613T101031", when) == "2023-06-13T10:10:31Z"
    assert acquisition_of("S2B_33UUP_20230613_0_L2A", "2023-06-13T10:10:31.480Z") == "2023-06-13T10:10:31Z"
    assert acquisition_of("scene", pd.Timestamp("2023-06-13 12:10:31+02:00")) == "2023-06-13T10:10:31Z"
    assert acquisition_of("scene", datetime(2023, 6, 13, 10, 10, 31)) == "2023-06-13T10:10:31Z"  # naive: UTC
    assert acquisition_of("scene", pd.NaT) is None and acquisition_of(None) is None
    assert acquisition_of("S1A_IW_GRDH_1SDV_20230613T165043", None) is None  # no datatake id, no time
