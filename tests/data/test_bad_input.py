"""Every kind of bad input gives a DataError naming the file/patch and the problem (or, with
on_error="skip", a dropped patch listed in ds.problems). Each case is a tmp variant of real bytes."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
from pathlib import Path

import lmdb
import numpy as np
import pandas as pd
import pytest
import tifffile

from csmae.data import DataError, open_dataset
from csmae.data.reben import shared_env

S2 = "S2A_MSIL2A_20170617T113321_36_85"
S1 = "S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85"


def writable_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            p = os.path.join(root, name)
            os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)
    os.chmod(dst, os.stat(dst).st_mode | stat.S_IWUSR)
    return dst


@pytest.fixture
def v1(shared_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = writable_copy(shared_data / "bigearthnet-v1", tmp_path / "v1")
    shutil.rmtree(root / "tables")
    return root / "BigEarthNet-v1.0", root / "BigEarthNet-S1-v1.0"


def band_file(v1: tuple[Path, Path], band: str) -> Path:
    return v1[0] / S2 / f"{S2}_{band}.tif"


def read_bad(v1: tuple[Path, Path], *match: str) -> DataError:
    ds = open_dataset(*v1)
    ok = [i for i, p in enumerate(ds.ids) if p != S2]
    ds[ok[0]]  # other patches still read
    with pytest.raises(DataError) as exc:
        ds.get(S2)
    msg = str(exc.value)
    for m in match:
        assert m in msg, msg
    return exc.value


# --- pixel problems: raised when the patch is read -------------------------------------------


def test_missing_band_file(v1) -> None:
    band_file(v1, "B05").unlink()
    read_bad(v1, f"{S2}_B05.tif", f"patch {S2}", "missing")


def test_truncated_band_file(v1) -> None:
    p = band_file(v1, "B03")
    p.write_bytes(p.read_bytes()[:15000])
    read_bad(v1, f"{S2}_B03.tif", S2, "truncated")


def test_non_tiff_band_file(v1) -> None:
    band_file(v1, "B8A").write_text("this is not an image\n" * 50)
    read_bad(v1, f"{S2}_B8A.tif", S2, "not a TIFF")


def test_wrong_band_shape(v1) -> None:
    p = band_file(v1, "B02")
    small = tifffile.imread(band_file(v1, "B05"))  # a real 60x60 band where 120x120 is expected
    tifffile.imwrite(p, small)
    read_bad(v1, "B02", S2, "shape (60, 60)", "expected (120, 120)")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_inf_pixels(v1, value: float) -> None:
    p = v1[1] / S1 / f"{S1}_VV.tif"
    arr = tifffile.imread(p)
    arr[3, 7] = value
    tifffile.imwrite(p, arr)
    read_bad(v1, "VV", S2, "NaN/inf")


def test_compressed_band_still_reads(v1) -> None:
    """Not an error: a deflate-compressed band goes through tifffile and gives the same pixels."""
    before = open_dataset(*v1).get(S2)["s2"]
    p = band_file(v1, "B06")
    tifffile.imwrite(p, tifffile.imread(p), compression="zlib")
    np.testing.assert_array_equal(open_dataset(*v1).get(S2)["s2"], before)


# --- pairing and label problems: found at open time ------------------------------------------


def open_problems(*sources, **kw) -> tuple[str, list[tuple[str, str]]]:
    with pytest.raises(DataError) as exc:
        open_dataset(*sources, **kw)
    ds = open_dataset(*sources, on_error="skip", **kw)
    return str(exc.value), ds.problems


def test_s2_without_s1_partner(v1) -> None:
    shutil.rmtree(v1[1] / S1)
    msg, problems = open_problems(*v1)
    assert S2 in msg and "no S1 partner" in msg
    assert [p for p, _ in problems] == [S2]
    assert len(open_dataset(*v1, on_error="skip")) == 5
    assert S2 in open_dataset(v1[0], sensors=("s2",)).ids  # fine for an S2-only dataset


def test_s1_without_s2_partner(v1) -> None:
    shutil.rmtree(v1[0] / S2)
    msg, problems = open_problems(*v1)
    assert S1 in msg and "no S2 partner" in msg and S2 in msg
    assert len(problems) == 1


def test_duplicate_ids_two_s1_claim_one_s2(v1) -> None:
    twin = "S1A_IW_GRDH_1SDV_20170617T064724_29UPU_99_99"
    (v1[1] / twin).mkdir()
    for f in (v1[1] / S1).iterdir():
        shutil.copyfile(f, v1[1] / twin / f.name.replace(S1, twin))
    msg, problems = open_problems(*v1)
    assert S2 in msg and "several S1 partners" in msg and twin in msg
    assert [p for p, _ in problems] == [S2]


def set_labels(v1, labels: list[str]) -> None:
    p = v1[0] / S2 / f"{S2}_labels_metadata.json"
    doc = json.loads(p.read_text())
    doc["labels"] = labels
    p.write_text(json.dumps(doc))


def test_unknown_label_name(v1) -> None:
    set_labels(v1, ["Pastures", "Moon craters"])
    msg, problems = open_problems(*v1)
    assert S2 in msg and "unknown 43-class label 'Moon craters'" in msg
    assert problems[0][0] == S2


def test_no_19_class_label(v1) -> None:
    set_labels(v1, ["Airports", "Bare rock"])
    msg, problems = open_problems(*v1)
    assert S2 in msg and "no 19-class label" in msg
    assert problems == [(S2, problems[0][1])]


def test_missing_label_json(v1) -> None:
    (v1[0] / S2 / f"{S2}_labels_metadata.json").unlink()
    msg, _ = open_problems(*v1)
    assert S2 in msg and "labels_metadata.json is missing" in msg


@pytest.fixture
def reben_variant(reben_dir: Path, tmp_path: Path):
    """A reBEN LMDB copy plus a way to write a modified metadata table next to it."""
    root = writable_copy(reben_dir / "BigEarthNet-V2-LMDB", tmp_path / "reben" / "BigEarthNet-V2-LMDB")
    meta = pd.read_parquet(reben_dir / "metadata.parquet")

    def write(df: pd.DataFrame) -> Path:
        df.to_parquet(root.parent / "metadata.parquet")
        return root

    return meta, write


def test_reben_duplicate_ids_unknown_and_empty_labels(reben_variant) -> None:
    meta, write = reben_variant
    meta = meta.reset_index(drop=True)
    dup = meta["patch_id"][0]
    meta.at[1, "labels"] = np.array(["Pastures", "Lava fields"])
    meta.at[2, "labels"] = np.array([], dtype=object)
    root = write(pd.concat([meta, meta.iloc[[0]]]))
    msg, problems = open_problems(root)
    assert f"{dup}: duplicate id (2 entries" in msg
    assert f"{meta['patch_id'][1]}: unknown 19-class label 'Lava fields'" in msg
    assert f"{meta['patch_id'][2]}: no 19-class label" in msg
    assert len(problems) == 3
    assert len(open_dataset(root, on_error="skip")) == 18 - 3


def test_reben_s2_or_s1_missing_from_lmdb(reben_variant, tmp_path: Path) -> None:
    meta, write = reben_variant
    src = write(meta)
    # rebuild the LMDB without one S2 value and one (other pair's) S1 value
    with shared_env(str(src)).begin() as txn:
        items = {bytes(k): bytes(v) for k, v in txn.cursor()}
    out = tmp_path / "cut" / "BigEarthNet-V2-LMDB"
    out.mkdir(parents=True)
    drop_s2, drop_s1 = meta["patch_id"].iloc[0], meta["s1_name"].iloc[1]
    env = lmdb.open(str(out), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for k, v in items.items():
            if k.decode() not in (drop_s2, drop_s1):
                txn.put(k, v)
    env.close()
    meta.to_parquet(out.parent / "metadata.parquet")
    msg, problems = open_problems(out)
    assert f"{drop_s2}: S2 patch missing from the source (its S1 partner is present)" in msg
    assert f"S1 partner {drop_s1} missing from the source (the S2 patch is present)" in msg
    assert len(problems) == 2


# --- untrusted pickles ------------------------------------------------------------------------


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def encoded_lmdb(tmp_path: Path, values: dict[str, bytes]) -> Path:
    out = tmp_path / "enc"
    (out / "BigEarthNetEncoded.lmdb").mkdir(parents=True)
    env = lmdb.open(str(out / "BigEarthNetEncoded.lmdb"), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for k, v in values.items():
            txn.put(k.encode(), v)
    env.close()
    return out


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_pickle_with_disallowed_global_is_refused_without_running(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    key = "S2A_MSIL2A_20170613T101031_39_24"
    src = encoded_lmdb(tmp_path, {key: pickle.dumps(Evil(marker), protocol=protocol)})
    ds = open_dataset(src)
    with pytest.raises(DataError) as exc:
        ds.get(key)
    msg = str(exc.value)
    assert key in msg and "disallowed global" in msg and ("posix.system" in msg or "os.system" in msg)
    assert not marker.exists()


def test_pickle_builtins_eval_and_corrupt_pickle(tmp_path: Path, encoded_lmdb_dir: Path) -> None:
    with shared_env(str(encoded_lmdb_dir / "BigEarthNetEncoded.lmdb")).begin() as txn:
        real = bytes(txn.get(b"S2A_MSIL2A_20170613T101031_39_24"))
    evil = b"cbuiltins\neval\n(S'1+1'\ntR."
    src = encoded_lmdb(tmp_path, {"a_eval": evil, "b_truncated": real[: len(real) // 2], "c_ok": real})
    ds = open_dataset(src)
    with pytest.raises(DataError, match=r"a_eval.*disallowed global builtins\.eval"):
        ds.get("a_eval")
    with pytest.raises(DataError, match=r"b_truncated.*corrupt pickle"):
        ds.get("b_truncated")
    assert ds.get("c_ok")["s2"].shape == (10, 120, 120)


# --- sources ----------------------------------------------------------------------------------


def test_empty_and_unknown_sources(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty.*empty source"):
        open_dataset(empty)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"odd: unknown source kind"):
        open_dataset(odd)
    with pytest.raises(DataError, match=r"nope: source not found"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="unknown source kind"):
        open_dataset(odd / "notes.txt")
    with pytest.raises(DataError, match="no source"):
        open_dataset()
    empty_lmdb = encoded_lmdb(tmp_path, {})
    with pytest.raises(DataError, match="LMDB is empty"):
        open_dataset(empty_lmdb)


def test_missing_partner_root_and_unknown_ids(v1) -> None:
    with pytest.raises(DataError, match="no v1 S1 root"):
        open_dataset(v1[0])
    with pytest.raises(DataError, match="S2A_MSIL2A_29990101T000000_1_1: requested id not found"):
        open_dataset(*v1, ids=[S2, "S2A_MSIL2A_29990101T000000_1_1"])
    ds = open_dataset(*v1, ids=[S2, "S2A_MSIL2A_29990101T000000_1_1"], on_error="skip")
    assert ds.ids == [S2] and ds.problems[0][0] == "S2A_MSIL2A_29990101T000000_1_1"


def test_encoded_id_in_two_split_files_and_mixed_sources(tmp_path: Path, encoded_lmdb_dir: Path,
                                                         reben_dir: Path) -> None:
    key = "S2A_MSIL2A_20170613T101031_39_24"
    with shared_env(str(encoded_lmdb_dir / "BigEarthNetEncoded.lmdb")).begin() as txn:
        real = bytes(txn.get(key.encode()))
    src = encoded_lmdb(tmp_path, {key: real})
    (src / "train.csv").write_text(key + "\n")
    (src / "test.csv").write_text(key + "\n")
    with pytest.raises(DataError, match=rf"{key}: listed in both train.csv and test.csv"):
        open_dataset(src)
    assert open_dataset(src, on_error="skip").problems[0][0] == key
    with pytest.raises(DataError, match="cannot be mixed"):
        open_dataset(encoded_lmdb_dir, reben_dir / "BigEarthNet-V2-LMDB")
