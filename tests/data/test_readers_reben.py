"""reBEN (BigEarthNet v2): the LMDB vs safetensors decoded here, and the folder layout (written here
from the LMDB sample's real bytes) vs the LMDB reader; labels, splits, metadata, DataLoader workers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
import torch.nn.functional as F
from safetensors.numpy import load as st_load

from csmae.data import open_dataset
from csmae.data.reben import shared_env
from csmae.labels import LABELS_19

S2_10M = {"B02", "B03", "B04", "B08"}


def bicubic(a: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(a.astype(np.float32))[None, None]
    return F.interpolate(t, size=(120, 120), mode="bicubic", align_corners=True)[0, 0].numpy()


def lmdb_items(path: Path) -> dict[str, bytes]:
    """Raw key -> value bytes (py-lmdb allows one environment per path per process: share it)."""
    with shared_env(str(path)).begin() as txn:
        return {bytes(k).decode(): bytes(v) for k, v in txn.cursor()}


def write_reben_folders(reben_dir: Path, out: Path) -> Path:
    """The reBEN folder layout (BigEarthNet-S2/<tile>/<patch>/..., BigEarthNet-S1/<product>/<s1>/...)
    written with tifffile from the real safetensors bytes of the LMDB sample."""
    items = lmdb_items(reben_dir / "BigEarthNet-V2-LMDB")
    meta = pd.concat([pd.read_parquet(reben_dir / "metadata.parquet"),
                      pd.read_parquet(reben_dir / "metadata_for_patches_with_snow_cloud_or_shadow.parquet")])
    for pid, s1n in zip(meta["patch_id"], meta["s1_name"]):
        for top, name, group in (("BigEarthNet-S2", pid, pid.rsplit("_", 2)[0]),
                                 ("BigEarthNet-S1", s1n, s1n.rsplit("_", 3)[0])):
            folder = out / top / group / name
            folder.mkdir(parents=True, exist_ok=True)
            for band, arr in st_load(items[name]).items():
                tifffile.imwrite(folder / f"{name}_{band}.tif", arr)
    shutil.copy(reben_dir / "metadata.parquet", out / "metadata.parquet")
    return out


@pytest.fixture(scope="module")
def reben_folders(reben_dir: Path, tmp_path_factory) -> Path:
    return write_reben_folders(reben_dir, tmp_path_factory.mktemp("reben") / "root")


@pytest.fixture(scope="module")
def lmdb_ds(reben_dir: Path):
    return open_dataset(reben_dir / "BigEarthNet-V2-LMDB", s2_bands="all")


def test_lmdb_pixels_equal_safetensors_decode(lmdb_ds, reben_dir: Path) -> None:
    items = lmdb_items(reben_dir / "BigEarthNet-V2-LMDB")
    meta = pd.read_parquet(reben_dir / "metadata.parquet").set_index("patch_id")
    assert sorted(lmdb_ds.ids) == sorted(meta.index)
    assert lmdb_ds.kind == "reben-lmdb"
    for pid in lmdb_ds.ids:
        s = lmdb_ds.get(pid)
        raw2 = st_load(items[pid])
        raw1 = st_load(items[meta.loc[pid, "s1_name"]])
        for i, band in enumerate(lmdb_ds.sensors["s2"].bands):
            expect = raw2[band].astype(np.float32) if band in S2_10M else bicubic(raw2[band])
            np.testing.assert_array_equal(s["s2"][i], expect, err_msg=f"{pid} {band}")
        for i, band in enumerate(lmdb_ds.sensors["s1"].bands):
            np.testing.assert_array_equal(s["s1"][i], raw1[band])


def test_labels_splits_metadata(lmdb_ds, reben_dir: Path) -> None:
    meta = pd.read_parquet(reben_dir / "metadata.parquet").set_index("patch_id")
    for pid, split in zip(lmdb_ds.ids, lmdb_ds.splits()):
        row = meta.loc[pid]
        s = lmdb_ds.get(pid)
        assert {LABELS_19[i] for i in np.flatnonzero(s["labels"])} == set(row["labels"])
        assert split == s["split"] == {"validation": "val"}.get(row["split"], row["split"])
        assert (s["s1_name"], s["country"], s["s2v1_name"]) == (row["s1_name"], row["country"],
                                                                row["s2v1_name"])
    assert sorted(set(lmdb_ds.splits())) == ["test", "train", "val"]


def test_metadata_as_source_snow_table_and_v1_name_alias(reben_dir: Path) -> None:
    lm = reben_dir / "BigEarthNet-V2-LMDB"
    both = open_dataset(lm, reben_dir / "metadata.parquet",
                        reben_dir / "metadata_for_patches_with_snow_cloud_or_shadow.parquet")
    assert len(both) == 24
    meta = pd.read_parquet(reben_dir / "metadata.parquet")
    v1_names = list(meta["s2v1_name"][:3])
    ds = open_dataset(lm, ids=v1_names)
    assert [ds.get(p)["s2v1_name"] for p in ds.ids] == v1_names
    val = open_dataset(lm, split="val")
    assert len(val) == 6 and set(val.splits()) == {"val"}


def test_folder_reader_equals_lmdb_reader(reben_folders: Path, lmdb_ds) -> None:
    ds = open_dataset(reben_folders, s2_bands="all")
    assert ds.kind == "reben-folders"
    assert ds.ids == lmdb_ds.ids
    assert ds.splits() == lmdb_ds.splits()
    for pid in ds.ids:
        a, b = ds.get(pid), lmdb_ds.get(pid)
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], np.ndarray):
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{pid} {k}")
            else:
                assert a[k] == b[k]
    only_s1 = open_dataset(reben_folders, sensors=("s1",))
    np.testing.assert_array_equal(only_s1[0]["s1"], lmdb_ds[0]["s1"])


def test_dataloader_workers_open_lmdb_lazily(lmdb_ds) -> None:
    from torch.utils.data import DataLoader

    def collate(batch):
        return [(b["id"], float(b["s2"].sum())) for b in batch]

    got = [x for batch in DataLoader(lmdb_ds, batch_size=4, num_workers=2, collate_fn=collate)
           for x in batch]
    assert [g[0] for g in got] == lmdb_ds.ids
    assert got[5][1] == pytest.approx(float(lmdb_ds[5]["s2"].sum()))


def test_pickled_dataset_reads_the_same(lmdb_ds, encoded_lmdb_dir: Path) -> None:
    """What spawn-started workers get: a pickled dataset (no open environment inside)."""
    import pickle

    enc = open_dataset(encoded_lmdb_dir)
    for ds in (lmdb_ds, enc):
        ds[0]  # the environment is open in this process now
        blob = pickle.dumps(ds)
        assert b"Environment" not in blob
        again = pickle.loads(blob)
        np.testing.assert_array_equal(again[1]["s2"], ds[1]["s2"])
        assert again.ids == ds.ids
