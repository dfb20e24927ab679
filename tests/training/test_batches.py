"""Training batches (BatchDataset) against an independent per-sample numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csmae.data import open_dataset
from csmae.models import create_model
from csmae.training.datamodule import BatchDataset
from csmae.training.sample_rng import flip_draws, sample_keys
from csmae.training.sampler import BatchRequest


def _request(positions, seed):
    return BatchRequest(list(positions), sample_keys(seed, 0, range(len(positions))), len(positions))


def _expected(dataset, sensors, positions, seed, hflip, vflip):
    """Per sample: the dataset's own sample, bands picked by name, (x - mean) / std, then flips.

    The flip draws are the per-sample keys' (checked against a pure-Python hash in test_sample_rng.py).
    """
    flips = flip_draws(sample_keys(seed, 0, range(len(positions))))
    out = {s: [] for s in sensors}
    for i, pos in enumerate(positions):
        smp = dataset[int(pos)]
        for s, spec in sensors.items():
            have = list(dataset.sensors[s].bands)
            x = np.asarray(smp[s], np.float32)[[have.index(b) for b in spec.bands]]
            mean = np.asarray(spec.mean, np.float32)[:, None, None]
            std = np.asarray(spec.std, np.float32)[:, None, None]
            x = (x - mean) / std
            if hflip and flips[i, 0]:
                x = x[:, :, ::-1]
            if vflip and flips[i, 1]:
                x = x[:, ::-1, :]
            out[s].append(x)
    return {s: np.stack(v) for s, v in out.items()}


@pytest.fixture(params=["reben_lmdb", "reben_store", "synth_store"])
def source(request):
    """No get_batch (per-sample reads), a store filled in place, a store with 12 S2 bands (reordered)."""
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("flips", [(True, True), (True, False), (False, False)])
def test_batch_equals_per_sample_reference(source, flips):
    sensors = create_model("csmae_sesd_tiny").sensors
    dataset = open_dataset(source)
    ds = BatchDataset(dataset, sensors, hflip=flips[0], vflip=flips[1])
    positions = [5, 0, 3, 7, 1, 2]
    batch = ds[_request(positions, 1234)]
    want = _expected(dataset, sensors, positions, 1234, *flips)
    for s in sensors:
        assert batch[s].dtype == torch.float32 and batch[s].is_contiguous()
        assert np.array_equal(batch[s].numpy(), want[s]), s
    assert batch["id"] == [dataset.ids[p] for p in positions]


def test_batch_from_a_loader_worker_is_the_same(synth_store):
    """In a DataLoader worker the buffers are in shared memory; the batch must not change."""
    sensors = create_model("csmae_sesd_tiny").sensors
    ds = BatchDataset(open_dataset(synth_store), sensors, hflip=True, vflip=True)
    req = _request([3, 1, 4, 15, 9, 2], 7)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, sampler=[req], num_workers=1)
    (got,) = list(loader)
    here = ds[req]
    for s in sensors:
        assert torch.equal(got[s], here[s])
