"""The device data path (raw compact batches, assembled after the transfer) equals the host path
bit for bit (fp32, CPU device), for every kind of source, with and without flips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csmae.data import open_dataset
from csmae.models import create_model
from csmae.models.device_batch import assemble, dense_layout, store_layout
from csmae.training.datamodule import BatchDataset
from csmae.training.sample_rng import sample_keys
from csmae.training.sampler import BatchRequest


def _request(positions, seed):
    return BatchRequest(list(positions), sample_keys(seed, 0, range(len(positions))), len(positions))


@pytest.fixture(scope="module")
def reben_native(tmp_path_factory, reben_lmdb):
    """The real reBEN sample in a native-layout store (uint16 S2 at 10/20 m, float32 S1)."""
    from csmae.data.prepare import prepare

    out = tmp_path_factory.mktemp("store") / "native"
    prepare([reben_lmdb], out, layout="native")
    return out


@pytest.fixture(scope="module")
def synth_native(tmp_path_factory):
    """12 S2 bands (10 m, 20 m and 60 m groups) stored natively; the model takes 10 of them."""
    from csmae.data.synth import write_synthetic

    return write_synthetic(
        tmp_path_factory.mktemp("synth") / "native", n=16, seed=5, format="store", layout="native"
    )[0]


@pytest.fixture(params=["reben_lmdb", "reben_store", "reben_native", "synth_native"])
def source(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("flips", [(True, True), (True, False), (False, False)])
def test_device_path_equals_host_path_bit_for_bit(source, flips):
    sensors = create_model("csmae_sesd_tiny").sensors
    dataset = open_dataset(source)
    host = BatchDataset(dataset, sensors, hflip=flips[0], vflip=flips[1])
    dev = BatchDataset(dataset, sensors, hflip=flips[0], vflip=flips[1], device_transforms=True)
    req = _request([5, 0, 3, 7, 1, 2], 4321)
    want = host[req]
    raw = dev[req]
    if "native" in str(source):  # compact: uint16 S2 records at native size travel
        assert raw["raw"]["s2_20m"].dtype == torch.uint16 and raw["raw"]["s2_20m"].shape[-1] == 60
        assert sum(t.numel() * t.element_size() for t in raw["raw"].values()) < 0.45 * sum(
            want[s].numel() * 4 for s in sensors
        )
    got = assemble(raw["raw"], dev.layout, sensors, flips=raw["flips"])
    for s in sensors:
        assert got[s].dtype == torch.float32 and got[s].shape == want[s].shape
        assert torch.equal(got[s], want[s]), (s, (got[s] - want[s]).abs().max())
    assert raw["id"] == want["id"] and torch.equal(raw["labels"], want["labels"])
    if flips[0]:
        assert raw["flips"][:, 0].any() and not raw["flips"][:, 0].all()  # the draw really flips some


def test_layouts_and_bad_raw_batches(reben_native, reben_lmdb):
    sensors = create_model("csmae_sesd_tiny").sensors
    layout = store_layout(open_dataset(reben_native), sensors)
    assert layout is not None and sorted(g.key for g in layout) == ["s1", "s2_10m", "s2_20m"]
    assert store_layout(open_dataset(reben_lmdb), sensors) is None  # no raw records: dense batches
    dense = dense_layout(sensors)
    with pytest.raises(ValueError, match=r"raw\[.s2.\]: expected \(2, 10, 120, 120\)"):
        assemble({"s1": torch.zeros(2, 2, 120, 120), "s2": torch.zeros(2, 9, 120, 120)}, dense, sensors)
    with pytest.raises(ValueError, match="no array for sensor 's2'"):
        assemble({"s1": torch.zeros(2, 2, 120, 120)}, dense[:1], sensors)


def test_datamodule_assembles_after_transfer(synth_native):
    """PairDataModule.on_after_batch_transfer turns a raw batch from a loader worker into model inputs."""
    from csmae.training.config import DataSection
    from csmae.training.datamodule import PairDataModule

    sensors = create_model("csmae_sesd_tiny").sensors
    cfg = DataSection(
        sources=[str(synth_native)],
        split=None,
        val_split=None,
        batch_size=4,
        num_workers=1,
        device_transforms=True,
    )
    dm = PairDataModule(cfg, sensors, seed=3)
    dm.setup("fit")
    assert dm.train_set is not None and dm.train_set.device_transforms
    req = _request([3, 1, 4, 15], 11)
    loader = torch.utils.data.DataLoader(dm.train_set, batch_size=None, sampler=[req], num_workers=1)
    (raw,) = list(loader)
    got = dm.on_after_batch_transfer(raw, 0)
    host = BatchDataset(open_dataset(synth_native), sensors, hflip=True, vflip=True)[req]
    for s in sensors:
        assert torch.equal(got[s], host[s])
    assert got["id"] == host["id"]
    assert np.array_equal(got["labels"].numpy(), host["labels"].numpy())


def test_device_transforms_config_key():
    from csmae.training.config import ConfigError, from_dict

    assert from_dict({"data": {"device_transforms": True}}).data.device_transforms is True
    assert from_dict({}).data.device_transforms == "auto"
    with pytest.raises(ConfigError, match="data.device_transforms"):
        from_dict({"data": {"device_transforms": "yes"}})


def test_fit_with_device_transforms_trains_the_same_weights(tmp_path, synth_native, tiny, monkeypatch):
    """A few fp32 steps through Lightning: raw batches assembled after the transfer, same weights."""
    from safetensors.torch import load_file

    import csmae.training.datamodule as dm
    from csmae.training.config import load_config
    from csmae.training.run import fit

    calls = []
    real = dm.assemble
    monkeypatch.setattr(dm, "assemble", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    weights, init = {}, load_file
    for mode in ("false", "true"):
        over = tiny(
            [synth_native], "trainer.precision=32", "data.num_workers=0", f"data.device_transforms={mode}"
        )
        res = fit(load_config(None, over), out=tmp_path / mode)
        assert res.steps >= 3
        weights[mode] = init(str(res.model_dir / "model.safetensors"))
        assert len(calls) == (0 if mode == "false" else res.steps)
    for k, v in weights["false"].items():
        assert torch.equal(weights["true"][k], v), k
