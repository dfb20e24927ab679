"""The prepared store returns exactly the source readers' samples, alone, batched and in workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from csmae.data import open_dataset
from csmae.data.base import DataError, upsample_stack
from csmae.data.prepare import prepare
from csmae.data.store import StoreDataset, is_store, plan_groups
from csmae.data.store_write import native_from_upsampled
from csmae.sensors import S1, S2, S2_12


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    for k, v in a.items():
        if isinstance(v, np.ndarray):
            assert v.dtype == b[k].dtype and v.shape == b[k].shape, k
            np.testing.assert_array_equal(v, b[k], err_msg=k)  # exact, not approximately
        else:
            assert v == b[k], k


@pytest.fixture(scope="module")
def v1_sources(v1_roots, v1_tables):
    return [str(v1_roots[0]), str(v1_roots[1]), str(v1_tables)]


@pytest.fixture(scope="module")
def v1_store(v1_sources, tmp_path_factory):
    return prepare(v1_sources, tmp_path_factory.mktemp("st") / "v1", s2_bands="all", layout="native").path


@pytest.mark.parametrize("kind", ["v1", "reben", "encoded"])
def test_round_trip_real_sources(kind, v1_sources, reben_dir, encoded_lmdb_dir, tmp_path):
    sources = {"v1": v1_sources,
               "reben": [str(reben_dir / "BigEarthNet-V2-LMDB"), str(reben_dir / "metadata.parquet")],
               "encoded": [str(encoded_lmdb_dir)]}[kind]
    res = prepare(sources, tmp_path / "store", chunk_size=4, layout="native")
    src = open_dataset(*sources)
    st = open_dataset(res.path)
    assert isinstance(st, StoreDataset) and is_store(res.path)
    assert sorted(st.ids) == sorted(src.ids) and res.pairs == len(src) > 0
    for pid in src.ids:
        _assert_same(src.get(pid), st.get(pid))
    # a store of a store (no native access: exact inversion of the bicubic upsampling)
    again = prepare([str(res.path)], tmp_path / "again", chunk_size=3, layout="float32")
    st2 = StoreDataset(again.path)
    for pid in src.ids:
        _assert_same(st.get(pid), st2.get(pid))


def test_all_bands_and_sensor_subsets(v1_store, v1_sources):
    src12 = open_dataset(*v1_sources, s2_bands="all")
    st12 = StoreDataset(v1_store, s2_bands="all")
    assert st12.sensors["s2"].bands == S2_12.bands
    for pid in src12.ids:
        _assert_same(src12.get(pid), st12.get(pid))
    st = StoreDataset(v1_store)  # default: the 10-band set, even though 12 are stored
    assert st.sensors["s2"].bands == S2.bands
    only_s1 = StoreDataset(v1_store, sensors=["s1"])
    s = only_s1[0]
    assert "s2" not in s and s["s1"].shape == (2, 120, 120)
    with pytest.raises(DataError, match="no sensor"):
        StoreDataset(v1_store, sensors=["s3"])


def test_get_batch_matches_samples(v1_store):
    st = StoreDataset(v1_store)
    idx = [3, 0, 5, 0, 2]
    b = st.get_batch(idx)
    assert b["s2"].shape == (5, 10, 120, 120) and b["s2"].dtype == np.float32
    assert b["s1"].shape == (5, 2, 120, 120) and b["labels"].shape == (5, 19) and b["labels"].dtype == bool
    assert b["id"] == [st.ids[i] for i in idx]
    for j, i in enumerate(idx):
        s = st[i]
        np.testing.assert_array_equal(b["s2"][j], s["s2"])
        np.testing.assert_array_equal(b["s1"][j], s["s1"])
        np.testing.assert_array_equal(b["labels"][j], s["labels"])
    # independent decode of the stored native records
    raw20 = np.load(v1_store / "s2_20m.npy")
    row = int(st._rows[3])
    g = {x.name: x for x in plan_groups({"s2": S2_12})}["s2_20m"]
    ref = upsample_stack(list(raw20[row]))
    for k, band in enumerate(g.bands):
        np.testing.assert_array_equal(b["s2"][0, S2.index(band)], ref[k])


def test_filters_and_pickle(v1_store):
    full = StoreDataset(v1_store)
    splits = full.splits()
    train = StoreDataset(v1_store, split="train")
    assert train.ids == [p for p, s in zip(full.ids, splits) if s == "train"]
    pick = [full.ids[4], full.ids[1]]
    sub = StoreDataset(v1_store, ids=pick)
    assert sub.ids == pick
    with pytest.raises(DataError, match="none of the"):
        StoreDataset(v1_store, ids=["nope"])
    full[0]  # opens the memmaps
    clone = pickle.loads(pickle.dumps(full))
    assert clone._arrays is None
    _assert_same(clone[2], full[2])


def test_dataloader_workers(v1_store):
    import torch

    st = StoreDataset(v1_store)
    dl = torch.utils.data.DataLoader(st, batch_size=3, num_workers=2, collate_fn=lambda x: x)
    got = {s["id"]: s for batch in dl for s in batch}
    assert sorted(got) == sorted(st.ids)
    for pid in st.ids:
        _assert_same(got[pid], st.get(pid))
    # whole batches assembled in the workers (shared-memory tensors), as training reads them
    from torch.utils.data import BatchSampler, SequentialSampler

    from csmae.data.store import BatchedView

    sampler = BatchSampler(SequentialSampler(st), 4, drop_last=False)
    dl = torch.utils.data.DataLoader(BatchedView(st), batch_size=None, sampler=sampler, num_workers=2)
    batches = list(dl)
    assert [len(b["id"]) for b in batches] == [4, 2]
    for b, start in zip(batches, (0, 4)):
        ref = st.get_batch(range(start, start + len(b["id"])))
        assert b["id"] == ref["id"]
        for k in ("s1", "s2"):
            np.testing.assert_array_equal(b[k].numpy(), ref[k])
        np.testing.assert_array_equal(np.asarray(b["labels"]), ref["labels"])


def test_float32_layout(v1_sources, v1_store, tmp_path):
    res = prepare(v1_sources, tmp_path / "f32")  # the default layout
    a, b = StoreDataset(res.path), StoreDataset(v1_store)
    assert {g["name"] for g in a.manifest["groups"]} == {"s1", "s2"}
    for pid in a.ids:
        _assert_same(a.get(pid), b.get(pid))


def test_manifest(v1_store):
    m = StoreDataset(v1_store).manifest
    assert m["kind"] == "csmae-store" and m["layout"] == "native"
    assert m["sensors"]["s1"]["bands"] == list(S1.bands) and m["sensors"]["s2"]["bands"] == list(S2_12.bands)
    assert m["counts"]["pairs"] == 6 and m["resampling"]["align_corners"] is True
    assert m["units"]["s1"] == "dB"


def test_inversion_refuses_non_integer_bands():
    rng = np.random.default_rng(0)
    g = [x for x in plan_groups({"s2": S2}) if x.side == 60][0]
    native = rng.integers(0, 10000, size=(6, 60, 60)).astype(np.uint16)
    up = upsample_stack(list(native))
    np.testing.assert_array_equal(native_from_upsampled(up, g, patch="p", band_names=g.bands), native)
    with pytest.raises(DataError, match="float32"):
        native_from_upsampled(up + 0.3, g, patch="p", band_names=g.bands)
