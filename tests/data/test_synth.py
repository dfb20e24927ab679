"""The synthetic archive: real v1 on-disk format, store == v1, structure, learnability."""

from __future__ import annotations

import json

import numpy as np
import pytest

from csmae.data import open_dataset
from csmae.data.store import StoreDataset
from csmae.data.synth import write_synthetic
from csmae.data.synth_scene import S1_GROUP_OF, S1_MEAN_DB, SPECTRA
from csmae.labels import LABELS_19


@pytest.fixture(scope="module")
def learn_store(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("syn") / "st", n=600, seed=11, format="store")[0]


def test_v1_format_and_store_agree(tmp_path):
    roots = write_synthetic(tmp_path / "v1", n=24, seed=2)
    (store,) = write_synthetic(tmp_path / "st", n=24, seed=2, format="store")
    v1 = open_dataset(*roots)
    st = open_dataset(store)
    assert v1.kind == "v1" and isinstance(st, StoreDataset)
    assert sorted(v1.ids) == sorted(st.ids) and len(v1) == 24
    assert set(v1.splits()) <= {"train", "val", "test"} and None not in v1.splits()
    for pid in v1.ids:
        a, b = v1.get(pid), st.get(pid)
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], np.ndarray):
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
            else:
                assert a[k] == b[k], k
    # raw files look like BigEarthNet v1: native sizes, dtypes, 43-class JSON, S1 JSON pairing
    import tifffile

    pid = v1.ids[0]
    folder = roots[0] / pid
    assert tifffile.imread(folder / f"{pid}_B05.tif").shape == (60, 60)
    assert tifffile.imread(folder / f"{pid}_B01.tif").dtype == np.uint16
    s1_json = json.loads(next(roots[1].glob("*/*_labels_metadata.json")).read_text())
    assert s1_json["corresponding_s2_patch"] in v1.ids
    from csmae.labels import LABEL_43_TO_19, map_43_to_19, multi_hot

    for p in roots[0].glob("*/*_labels_metadata.json"):
        names = json.loads(p.read_text())["labels"]
        assert set(names) <= set(LABEL_43_TO_19) and not set(names) & (set(LABELS_19) - set(LABEL_43_TO_19))
        pid = p.parent.name
        np.testing.assert_array_equal(v1.get(pid)["labels"], multi_hot(map_43_to_19(names)))


def test_structure(learn_store):
    st = StoreDataset(learn_store)
    y = st.labels_array()
    assert y.any(axis=1).all()
    assert 1.5 < y.sum(axis=1).mean() < 4.5  # several classes per patch
    assert (y.sum(axis=0) > 0).sum() >= 15  # most classes occur
    s = st[0]
    assert s["s1"].min() > -60 and s["s1"].max() < 20 and s["s2"].min() >= 0
    splits = st.splits()
    assert 0.5 < splits.count("train") / len(splits) < 0.7
    # S1 cannot tell the agricultural classes apart; S2 can
    agri = [i for i, g in enumerate(S1_GROUP_OF) if g == "agri"]
    assert len(agri) >= 4 and np.ptp(S1_MEAN_DB[agri], axis=0).max() == 0
    assert np.ptp(SPECTRA[agri], axis=0).max() > 300


def _features(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x.mean(axis=(2, 3)), x.std(axis=(2, 3))], axis=1)  # (N, 2C)


@pytest.mark.parametrize("sensor", ["s1", "s2"])
def test_learnable(learn_store, sensor):
    st = StoreDataset(learn_store)
    b = st.get_batch(np.arange(len(st)))
    feats = _features(b[sensor])
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    y = b["labels"]
    split = np.array(st.splits())
    train, test = split == "train", split == "test"
    classes = [c for c in range(y.shape[1]) if y[train, c].sum() >= 3]
    means = np.stack([feats[train & y[:, c]].mean(0) for c in classes])  # nearest class mean
    pred = np.array(classes)[np.argmin(((feats[test, None] - means[None]) ** 2).sum(-1), axis=1)]
    acc = y[test][np.arange(test.sum()), pred].mean()  # predicted class is one of the labels
    chance = y[test].mean()  # a class drawn at random is one of the labels
    assert acc > 1.5 * chance, (sensor, acc, chance)
    if sensor == "s2":  # S2 even beats the best constant guess; S1 cannot (crop types look alike)
        assert acc > y[test].mean(0).max(), (acc, y[test].mean(0).max())
    # retrieval: the nearest training patch shares a label far more often than a random one
    nn = np.argmin(((feats[test, None] - feats[train][None]) ** 2).sum(-1), axis=1)
    hit = (y[test] & y[train][nn]).any(1).mean()
    rand = (y[test][:, None] & y[train][None]).any(-1).mean()
    assert hit > rand + 0.15, (sensor, hit, rand)


def test_subset_from_synthetic_tables(tmp_path):
    from csmae.data.subsets import make_subset

    roots = write_synthetic(tmp_path / "v1", n=30, seed=4)
    info = make_subset(roots[2], tmp_path / "sub", splits=["train"])
    v1 = open_dataset(*roots, split="train")
    assert info["counts"]["all"] == len(v1) and sorted(v1.ids) == sorted(
        (tmp_path / "sub" / "train.txt").read_text().split())


def test_cli(tmp_path, capsys):
    from csmae.cli import main

    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "5", "--seed", "1", "--format", "store"]) == 0
    assert len(StoreDataset(tmp_path / "s")) == 5
    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "5"]) == 1  # exists
