"""Masking plans and patchify against brute-force definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csmae.masking import MASK_STRATEGIES, len_keep_for, make_mask_plan, patchify, unpatchify

L = 64


@pytest.mark.parametrize("channels", [1, 2, 3, 10])
def test_patchify_layout_and_roundtrip(channels):
    p = 15
    imgs = torch.randn(2, channels, 120, 120)
    x = patchify(imgs, p)
    assert x.shape == (2, 64, p * p * channels)
    rng = np.random.default_rng(0)
    for _ in range(20):  # brute force: token (i, j), pixel (r, q, c) -> img[c, i*p + r, j*p + q]
        n, i, j, r, q, c = (int(rng.integers(k)) for k in (2, 8, 8, p, p, channels))
        assert x[n, i * 8 + j, (r * p + q) * channels + c] == imgs[n, c, i * p + r, j * p + q]
    assert torch.equal(unpatchify(x, p, channels), imgs)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.3, 0.5, 0.75, 0.9])
def test_random_masks_follow_the_noise(ratio):
    noise = {s: torch.rand(3, L) for s in ("s1", "s2")}
    plan = make_mask_plan("random", ratio, ["s1", "s2"], n=3, num_tokens=L, noise=noise)
    keep = int(L * (1 - ratio))
    for s, m in plan.items():
        assert m.len_keep == keep == len_keep_for(L, ratio)
        order = np.argsort(noise[s].numpy(), axis=1, kind="stable")
        for n in range(3):
            expected = np.ones(L)
            expected[order[n, :keep]] = 0
            np.testing.assert_array_equal(m.mask[n].numpy(), expected)
            assert sorted(m.ids_keep[n].tolist()) == sorted(order[n, :keep].tolist())
            # ids_restore inverts the shuffle
            np.testing.assert_array_equal(order[n][m.ids_restore[n].numpy()], np.arange(L))
    if 0 < ratio:
        assert not torch.equal(plan["s1"].mask, plan["s2"].mask)  # independent


def test_identical_masks_are_equal():
    plan = make_mask_plan("identical", 0.5, ["s1", "s2"], n=4, num_tokens=L)
    assert torch.equal(plan["s1"].mask, plan["s2"].mask)
    assert torch.equal(plan["s1"].ids_keep, plan["s2"].ids_keep)


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.75])
def test_disjoint_masks_are_complementary(ratio):
    plan = make_mask_plan("disjoint", ratio, ["s1", "s2"], n=4, num_tokens=L)
    assert torch.equal(plan["s1"].mask + plan["s2"].mask, torch.ones(4, L))
    assert plan["s1"].len_keep == int(L * (1 - ratio))
    assert plan["s2"].len_keep == L - plan["s1"].len_keep


def test_strategies_are_a_table_and_bad_input_errors():
    assert set(MASK_STRATEGIES) == {"random", "identical", "disjoint"}
    with pytest.raises(ValueError, match="valid"):
        make_mask_plan("checkerboard", 0.5, ["s1"], n=1, num_tokens=L)
    with pytest.raises(ValueError, match=r"expected \(2, 64\)"):
        make_mask_plan("random", 0.5, ["s1"], n=2, num_tokens=L, noise={"s1": torch.rand(2, 10)})
    with pytest.raises(ValueError, match="unknown sensor"):
        make_mask_plan("random", 0.5, ["s1"], n=2, num_tokens=L, noise={"s9": torch.rand(2, L)})
