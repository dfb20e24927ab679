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
    assert [r.seed for r in a] != [r.seed for r in b]


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
    # validation order (no shuffle, keep the tail on one process)
    val = ResumableBatchSampler(10, 4, seed=0, shuffle=False, drop_last=False)
    assert _batches(val) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_resume_skips_exactly_the_consumed_batches_once():
    s = ResumableBatchSampler(40, 4, seed=5, shuffle=True, drop_last=True)
    s.set_epoch(1)
    full = list(s)
    s.resume(1, 3)
    assert list(s) == full[3:]  # same requests (positions and flip seeds)
    assert list(s) == full  # the skip applies once
    s.resume(1, 3)
    s.set_epoch(2)
    s2 = ResumableBatchSampler(40, 4, seed=5, shuffle=True, drop_last=True)
    s2.set_epoch(2)
    assert list(s) == list(s2)  # a skip for another epoch is dropped


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
    from csmae.training.sampler import BatchRequest

    sensors = {"s1": get_sensor("s1"), "s2": get_sensor("s2")}
    ds = open_dataset(*v1_roots)
    plain = BatchDataset(ds, sensors)
    flipped = BatchDataset(ds, sensors, hflip=True, vflip=True)
    ref = plain[BatchRequest(list(range(6)), 0)]
    seen = set()
    for seed in range(4):
        out = flipped[BatchRequest(list(range(6)), seed)]
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
