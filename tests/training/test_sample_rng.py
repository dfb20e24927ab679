"""Per-sample draws against an independent pure-Python SplitMix64 (integers, no numpy)."""

from __future__ import annotations

import numpy as np
import torch

from csmae.training import sample_rng

MASK64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """SplitMix64's output function, as published (Steele, Lea, Flood 2014), on Python ints."""
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _key(seed: int, stream: int, epoch: int, index: int) -> int:
    base = _mix(_mix(_mix(seed) ^ stream) ^ epoch)
    return _mix(base ^ _mix(index))


def _uniform(key: int, salt: int, j: int) -> float:
    return (_mix(key ^ _mix((salt << 32) + j)) >> 40) / 2.0**24


def test_splitmix_known_values():
    # first outputs of the SplitMix64 generator seeded with 0 (state advanced by the golden gamma)
    assert int(sample_rng.splitmix64(np.uint64(0))) == 0xE220A8397B1DCDAF
    assert _mix(0) == 0xE220A8397B1DCDAF
    assert _mix(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4


def test_keys_and_draws_match_the_pure_python_reference():
    idx = [0, 1, 7, 12345, 2**40 + 3]
    keys = sample_rng.sample_keys(42, 3, idx)
    assert keys.dtype == np.uint64
    assert [int(k) for k in keys] == [_key(42, sample_rng.TRAIN_STREAM, 3, i) for i in idx]
    u = sample_rng.uniform(keys, 5, 9)
    assert u.shape == (5, 9) and u.dtype == np.float32
    for a, k in enumerate(keys):
        for j in range(9):
            assert u[a, j] == np.float32(_uniform(int(k), 5, j))
    # the int64 tensor a batch carries has the same bits
    t = sample_rng.keys_to_tensor(keys)
    assert t.dtype == torch.int64 and [int(k) for k in sample_rng.keys_from(t)] == [int(k) for k in keys]
    flips = sample_rng.flip_draws(t)
    want = [[_uniform(int(k), sample_rng.FLIP_SALT, j) < 0.5 for j in range(2)] for k in keys]
    assert flips.tolist() == want


def test_draws_depend_on_the_place_not_on_the_batch():
    keys = sample_rng.sample_keys(1, 0, range(64))
    whole = sample_rng.mask_noise(keys, ["s1", "s2"], 144)
    halves = [sample_rng.mask_noise(keys[a:b], ["s2", "s1"], 144) for a, b in ((0, 40), (40, 64))]
    for s in ("s1", "s2"):
        assert torch.equal(whole[s], torch.cat([h[s] for h in halves]))
    assert not torch.equal(whole["s1"], whole["s2"])
    # streams, epochs and seeds give other keys; the draws look uniform
    others = [sample_rng.sample_keys(1, 1, range(64)), sample_rng.sample_keys(2, 0, range(64)),
              sample_rng.sample_keys(1, 0, range(64), stream=sample_rng.VAL_STREAM)]
    assert all(not set(keys.tolist()) & set(o.tolist()) for o in others)
    u = sample_rng.uniform(sample_rng.sample_keys(0, 0, range(4096)), 1, 64)
    assert abs(float(u.mean()) - 0.5) < 0.005 and u.min() >= 0.0 and u.max() < 1.0
    flips = sample_rng.flip_draws(sample_rng.sample_keys(0, 0, range(4096)))
    assert abs(float(flips.float().mean()) - 0.5) < 0.02
