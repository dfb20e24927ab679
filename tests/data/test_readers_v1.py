"""BigEarthNet v1.0 folders vs an independent decode (tifffile + torch bicubic), labels, pairing, splits."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F

from csmae.data import open_dataset
from csmae.labels import LABELS_19
from csmae.sensors import get_sensor

UNPADDED = "S2B_MSIL2A_20170924T93020_69_24"  # the hour lost its leading zero


def bicubic(a: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(a.astype(np.float32))[None, None]
    return F.interpolate(t, size=(120, 120), mode="bicubic", align_corners=True)[0, 0].numpy()


def expected_band(folder: Path, stem: str, band: str) -> np.ndarray:
    a = tifffile.imread(folder / f"{stem}_{band}.tif")
    return a.astype(np.float32) if a.shape == (120, 120) else bicubic(a)


def s1_partners(s1_root: Path) -> dict[str, str]:
    out = {}
    for d in s1_root.iterdir():
        doc = json.loads((d / f"{d.name}_labels_metadata.json").read_text())
        out[doc["corresponding_s2_patch"]] = d.name
    return out


@pytest.fixture(scope="module")
def ds_all(v1_roots):
    s2_root, s1_root = v1_roots
    return open_dataset(s1_root, s2_root, s2_bands="all")


def test_pixels_equal_tifffile_and_torch_bicubic(ds_all, v1_roots) -> None:
    s2_root, s1_root = v1_roots
    partners = s1_partners(s1_root)
    assert sorted(ds_all.ids) == sorted(p.name for p in s2_root.iterdir())
    for pid in ds_all.ids:
        s = ds_all.get(pid)
        assert s["s2"].shape == (12, 120, 120) and s["s2"].dtype == np.float32
        for i, band in enumerate(ds_all.sensors["s2"].bands):
            np.testing.assert_array_equal(s["s2"][i], expected_band(s2_root / pid, pid, band),
                                          err_msg=f"{pid} {band}")
        s1n = partners[pid]
        assert s["s1_name"] == s1n
        for i, band in enumerate(ds_all.sensors["s1"].bands):
            np.testing.assert_array_equal(s["s1"][i], tifffile.imread(s1_root / s1n / f"{s1n}_{band}.tif"))


def test_labels_mapped_from_43_classes(ds_all) -> None:
    # written out by hand from the JSON files (43-class names) and the published 43->19 table
    expected = {
        "S2A_MSIL2A_20170613T101031_87_48": {
            "Arable land",
            "Land principally occupied by agriculture, with significant areas of natural vegetation"},
        UNPADDED: {"Coniferous forest", "Mixed forest", "Transitional woodland, shrub", "Inland wetlands",
                   "Inland waters"},
        "S2A_MSIL2A_20170617T113321_4_55": {"Pastures"},
    }
    for pid, names in expected.items():
        s = ds_all.get(pid)
        assert s["labels"].dtype == bool and s["labels"].shape == (19,)
        assert {LABELS_19[i] for i in np.flatnonzero(s["labels"])} == names


def test_roots_in_either_order_parent_and_unpadded_hour(v1_roots) -> None:
    s2_root, s1_root = v1_roots
    a = open_dataset(s2_root, s1_root)
    b = open_dataset(s1_root, s2_root)
    c = open_dataset(s2_root.parent)
    assert a.ids == b.ids == c.ids and UNPADDED in a.ids
    assert a.kind == "v1"
    s = a.get(UNPADDED)
    assert s["s1_name"] == "S1A_IW_GRDH_1SDV_20170925T043256_35VPK_69_24"
    assert s["acquisition_date"] == "2017-09-24 09:30:20"


# The sample's rows of the real v1 side tables (s1_s2_name_country_season.csv.bz2 + train/val/test.csv.bz2):
# s2_name s1_name country season split
_ROWS = """
S2A_MSIL2A_20170613T101031_87_48 S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48 Austria Summer test
S2B_MSIL2A_20170924T93020_69_24 S1A_IW_GRDH_1SDV_20170925T043256_35VPK_69_24 Finland Fall train
S2A_MSIL2A_20170617T113321_4_55 S1A_IW_GRDH_1SDV_20170617T064724_29UPU_4_55 Ireland Summer train
S2B_MSIL2A_20180204T94161_57_38 S1A_IW_GRDH_1SDV_20180204T043253_35VPK_57_38 Finland Winter -
S2A_MSIL2A_20171221T112501_56_35 S1A_IW_GRDH_1SDV_20171221T064238_29SND_56_35 Portugal Winter train
S2A_MSIL2A_20170617T113321_36_85 S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85 Ireland Summer train
"""
TABLE_ROWS = {r[0]: (r[1], r[2], r[3], None if r[4] == "-" else r[4])
              for r in (line.split() for line in _ROWS.strip().splitlines())}


def small_tables(out: Path) -> Path:
    """The side tables cut down to the sample's rows plus a decoy pair, bz2-compressed like the originals."""
    out.mkdir()
    rows = dict(TABLE_ROWS, S2A_MSIL2A_20170101T000000_1_1=("S1A_IW_GRDH_1SDV_20170101T000000_33UUP_1_1",
                                                            "Serbia", "Winter", "val"))
    lines = ["s1_name,s2_name,country,season"] + [f"{v[0]},{k},{v[1]},{v[2]}" for k, v in rows.items()]
    (out / "s1_s2_name_country_season.csv.bz2").write_bytes(bz2.compress("\n".join(lines).encode()))
    for split in ("train", "val", "test"):
        names = [k for k, v in rows.items() if v[3] == split]
        (out / f"{split}.csv.bz2").write_bytes(bz2.compress("\n".join(names).encode()))
    return out


def check_tables(v1_roots, tables: Path) -> None:
    s2_root, s1_root = v1_roots
    plain = open_dataset(s2_root, s1_root)
    ds = open_dataset(s2_root, s1_root, tables=tables)
    assert ds.ids == plain.ids == sorted(TABLE_ROWS)
    assert ds.splits() == [TABLE_ROWS[p][3] for p in ds.ids]
    for pid in ds.ids:
        s, p = ds.get(pid), plain.get(pid)
        assert (s["s1_name"], s["country"], s["season"], s["split"]) == TABLE_ROWS[pid]
        assert p["s1_name"] == s["s1_name"]  # JSON pairing agrees with the table
        np.testing.assert_array_equal(s["s1"], p["s1"])
    train = open_dataset(s2_root, s1_root, tables=tables, split="train")
    assert train.ids == [p for p in ds.ids if TABLE_ROWS[p][3] == "train"]
    only_s2 = open_dataset(s2_root, sensors=("s2",), tables=tables)
    assert [only_s2.get(p)["s1_name"] for p in only_s2.ids] == [TABLE_ROWS[p][0] for p in only_s2.ids]
    with pytest.raises(ValueError, match="unknown split"):
        open_dataset(s2_root, s1_root, tables=tables, split="dev")


def test_side_tables_pairing_country_season_split(v1_roots, tmp_path: Path) -> None:
    check_tables(v1_roots, small_tables(tmp_path / "tables"))


@pytest.mark.slow
def test_full_real_side_tables(v1_roots, v1_tables) -> None:
    check_tables(v1_roots, v1_tables)


def test_single_sensor_and_band_order(v1_roots, ds_all) -> None:
    s2_root, s1_root = v1_roots
    only_s1 = open_dataset(s1_root, sensors=("s1",))
    only_s2 = open_dataset(s2_root, sensors=("s2",), s2_bands=["B8A", "B04", "B01"])
    assert only_s1.ids == only_s2.ids == ds_all.ids
    assert set(only_s1.sensors) == {"s1"} and set(only_s2.sensors) == {"s2"}
    x1, x2, full = only_s1[2], only_s2[2], ds_all[2]
    assert "s2" not in x1 and "s1" not in x2
    np.testing.assert_array_equal(x1["s1"], full["s1"])
    np.testing.assert_array_equal(x1["labels"], full["labels"])  # from the S1 JSON
    s2 = get_sensor("s2", bands="all")
    for i, band in enumerate(["B8A", "B04", "B01"]):
        np.testing.assert_array_equal(x2["s2"][i], full["s2"][s2.index(band)])
    assert open_dataset(s2_root, s1_root).sensors["s2"].bands == get_sensor("s2").bands


def test_ids_filter_list_and_names_file(v1_roots, tmp_path: Path) -> None:
    s2_root, s1_root = v1_roots
    want = [UNPADDED, "S2A_MSIL2A_20170613T101031_87_48"]
    ds = open_dataset(s2_root, s1_root, ids=want)
    assert ds.ids == want
    with pytest.raises(ValueError, match="no split information"):
        open_dataset(s2_root, s1_root, split="train")
    names = tmp_path / "names.txt"
    names.write_text("# a subset\n" + "\n".join(want) + "\n")
    assert open_dataset(s2_root, s1_root, ids=names).ids == want
