"""The batch sampler (order, rank sharding, resume) and the optimiser/schedule against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from csmae.training.config import OptimSection, ScheduleSection
from csmae.training.optim import lr_lambda, param_groups, scaled_lr
from csmae.training.sampler import ResumableBatchSampler, ResumableLoader


def _batches(s: ResumableBatchSampler) -> list[list[int]]:
    return [r.positions for r in s]


def _requests(s: ResumableBatchSampler) -> list[tuple[list[int], list[int], int]]:
    """Comparable requests: (positions, keys, global batch size)."""
    return [(r.positions, r.keys.tolist(), r.global_n) for r in s]


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = ResumableBatchSampler(50, 8, seed=1, shuffle=True, drop_last=True)
    b = ResumableBatchSampler(50, 8, seed=1, shuffle=True, drop_last=True)
    a.set_epoch(3)
    b.set_epoch(3)
    assert _batches(a) == _batches(b) and len(_batches(a)) == len(a) == 6
    flat = sum(_batches(a), [])
    assert len(set(flat)) == 48 and set(flat) <= set(range(50))
    b.set_epoch(4)
    assert _batches(a) != _batches(b)
    assert [r.keys.tolist() for r in a] != [r.keys.tolist() for r in b]


def test_ranks_split_each_global_batch():
    single = ResumableBatchSampler(37, 6, seed=0, shuffle=True, drop_last=True)
    ranks = [
        ResumableBatchSampler(37, 3, seed=0, shuffle=True, drop_last=True, rank=r, world_size=2)
        for r in range(2)
    ]
    for s in (single, *ranks):
        s.set_epoch(2)
    per_rank = [_batches(s) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(single) == 6
    for b, whole in enumerate(_batches(single)):
        assert per_rank[0][b] + per_rank[1][b] == whole
    # the per-sample keys (flips, mask noise) follow the sample's place in the global batch, not the rank
    for whole, r0, r1 in zip(single, *ranks, strict=True):
        assert whole.keys.tolist() == r0.keys.tolist() + r1.keys.tolist()
        assert whole.global_n == r0.global_n == r1.global_n == 6
    # validation order (no shuffle, keep the tail on one process)
    val = ResumableBatchSampler(10, 4, seed=0, shuffle=False, drop_last=False)
    assert _batches(val) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("world", [2, 3])
def test_incomplete_last_batch_is_kept_and_split_over_ranks(world):
    # 37 items, global batch 12: three full batches and a tail of 1 (dropped: fewer than the ranks)
    # or, with 41 items, a tail of 5 split into slices of sizes differing by at most one
    for n, tail in ((37, 1), (41, 5)):
        single = ResumableBatchSampler(n, 12, seed=7, shuffle=True, drop_last=False)
        ranks = [
            ResumableBatchSampler(
                n, 12 // world, seed=7, shuffle=True, drop_last=False, rank=r, world_size=world
            )
            for r in range(world)
        ]
        one = _requests(single)
        assert len(one) == 4 and one[-1][2] == tail and sum(len(p) for p, _, _ in one) == n
        parts = [_requests(s) for s in ranks]
        kept = 4 if tail >= world else 3
        assert all(len(p) == len(s) == kept for p, s in zip(parts, ranks, strict=True))
        for b in range(kept):
            assert sum((parts[r][b][0] for r in range(world)), []) == one[b][0]
            assert sum((parts[r][b][1] for r in range(world)), []) == one[b][1]
            sizes = [len(parts[r][b][0]) for r in range(world)]
            assert max(sizes) - min(sizes) <= 1 and all(parts[r][b][2] == one[b][2] for r in range(world))
        dropped = ResumableBatchSampler(n, 12, seed=7, shuffle=True, drop_last=True)
        assert _requests(dropped) == one[:3]


def test_resume_skips_exactly_the_consumed_batches():
    s = ResumableBatchSampler(40, 4, seed=5, shuffle=True, drop_last=True)
    s.set_epoch(1)
    full = _requests(s)
    s.resume(1, 3)
    assert _requests(s) == full[3:]  # same requests (positions and per-sample keys)
    # a DataLoader with workers iterates its sampler twice while building one iterator: the skip
    # must hold for every iteration of the resumed epoch (issue 14.1)
    assert _requests(s) == full[3:]
    s.set_epoch(1)
    assert _requests(s) == full[3:]
    s.set_epoch(2)  # the next epoch starts from its beginning
    s2 = ResumableBatchSampler(40, 4, seed=5, shuffle=True, drop_last=True)
    s2.set_epoch(2)
    assert _requests(s) == _requests(s2)
    s.resume(1, 3)
    s.set_epoch(2)
    assert _requests(s) == _requests(s2)  # a skip for another epoch is dropped
    # while restoring, Lightning builds iterators with an epoch number below the resumed one: the
    # checkpoint's position wins until the loop has moved past the resumed epoch
    s.resume(1, 3)
    s.set_epoch(0)
    assert _requests(s) == full[3:] and s.epoch == 1
    s.set_epoch(2)
    assert _requests(s) == _requests(s2)


def test_loader_state_moves_to_the_next_epoch_at_the_end():
    s = ResumableBatchSampler(12, 4, seed=0, shuffle=True, drop_last=True)
    s.set_epoch(4)
    done = {"n": 1}
    loader = ResumableLoader(list(range(3)), batch_sampler=s, progress=lambda: (done["n"], 3))
    assert loader.state_dict() == {"epoch": 4, "batches_done": 1, "seed": 0}
    done["n"] = 3
    assert loader.state_dict() == {"epoch": 5, "batches_done": 0, "seed": 0}


@pytest.mark.parametrize(
    "warmup_epochs,floor,kind",
    [(10, 0.0, "cosine"), (2.5, 0.1, "cosine"), (3, 0.0, "constant"), (0, 0.0, "cosine")],
)
def test_lr_schedule_matches_the_formula(warmup_epochs, floor, kind):
    per_epoch, epochs = 7, 30
    total = per_epoch * epochs
    f = lr_lambda(
        ScheduleSection(kind=kind, warmup_epochs=warmup_epochs, min_lr_ratio=floor),
        total_steps=total,
        steps_per_epoch=per_epoch,
    )
    w = round(warmup_epochs * per_epoch)
    for step in range(total + 1):
        if step < w:
            want = step / w
        elif kind == "constant":
            want = 1.0
        else:
            want = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step - w) / (total - w)))
        assert f(step) == pytest.approx(want, abs=1e-12), step
    assert f(0) == (0.0 if w else 1.0) and (kind == "constant" or f(total) == pytest.approx(floor))


def test_lr_scaling():
    o = OptimSection(lr=1e-4, lr_base_batch=256)
    assert scaled_lr(o, 1024) == 1e-4
    o.lr_scaling = "linear"
    assert scaled_lr(o, 1024) == pytest.approx(4e-4)
    o.lr_scaling = "sqrt"
    assert scaled_lr(o, 1024) == pytest.approx(2e-4)


def test_no_decay_groups():
    import csmae

    model = csmae.create_model(
        "csmae_sesd_tiny",
        embed_dim=48,
        num_heads=3,
        private_depth=1,
        shared_depth=1,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    named = dict(model.named_parameters())
    (one,) = param_groups(model, OptimSection())
    assert len(one["params"]) == len(named) and one["weight_decay"] == 0.05
    decay, no_decay = param_groups(model, OptimSection(no_decay_norm_bias=True))
    ids_nd = {id(p) for p in no_decay["params"]}
    for name, p in named.items():
        expect_nd = p.ndim <= 1 or name.endswith("token")
        assert (id(p) in ids_nd) == expect_nd, name
    assert no_decay["weight_decay"] == 0.0 and decay["params"] and no_decay["params"]
    assert any(n.endswith("token") for n in named)  # the cls/mask tokens exist and are exempt


def test_flips_are_the_same_for_both_sensors_of_a_pair(v1_roots):
    from csmae.data import open_dataset
    from csmae.sensors import get_sensor
    from csmae.training.datamodule import BatchDataset
    from csmae.training.sample_rng import sample_keys
    from csmae.training.sampler import BatchRequest

    def req(seed):
        return BatchRequest(list(range(6)), sample_keys(seed, 0, range(6)), 6)

    sensors = {"s1": get_sensor("s1"), "s2": get_sensor("s2")}
    ds = open_dataset(*v1_roots)
    plain = BatchDataset(ds, sensors)
    flipped = BatchDataset(ds, sensors, hflip=True, vflip=True)
    ref = plain[req(0)]
    seen = set()
    for seed in range(4):
        out = flipped[req(seed)]
        assert out["id"] == ref["id"]
        for i in range(6):
            kinds = []
            for s in sensors:
                x, r = out[s][i], ref[s][i]
                match = [
                    k
                    for k, f in (
                        ("none", r),
                        ("h", r.flip(-1)),
                        ("v", r.flip(-2)),
                        ("hv", r.flip(-1).flip(-2)),
                    )
                    if torch.equal(x, f)
                ]
                assert match, (s, i)
                kinds.append(match[0])
            assert kinds[0] == kinds[1]  # S1 and S2 of a pair got the same flip
            seen.add(kinds[0])
    assert seen == {"none", "h", "v", "hv"}
    # normalisation uses the sensor statistics (brute force on one band)
    raw = ds[0]["s2"]
    b = sensors["s2"].index("B08")
    mean, std = sensors["s2"].mean[b], sensors["s2"].std[b]
    np.testing.assert_allclose(ref["s2"][0, b].numpy(), (raw[b] - mean) / std, rtol=1e-5, atol=1e-5)
