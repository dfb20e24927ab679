"""The capture-safe reconstruction loss (CUDA graph path) equals the default one on CPU."""

from __future__ import annotations

import pytest
import torch

from csmae.losses import masked_mse, masked_mse_static


@pytest.mark.parametrize("norm_pix", [False, True])
def test_static_masked_mse_equals_selected_patches(norm_pix):
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(6, 64, 150, generator=g, requires_grad=True)
    target = torch.randn(6, 64, 150, generator=g)
    mask = (torch.rand(6, 64, generator=g) < 0.5).float()
    want = masked_mse(pred, target, mask, norm_pix=norm_pix)
    (gw,) = torch.autograd.grad(want, pred)
    got = masked_mse_static(pred, target, mask.bool(), norm_pix=norm_pix)
    (gg,) = torch.autograd.grad(got, pred)
    # brute force: mean over the masked patches of the per-patch mean squared error
    t = target
    if norm_pix:
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
    per_patch = ((pred.detach().double() - t.double()) ** 2).mean(-1)
    ref = per_patch[mask.bool()].mean()
    assert want.item() == pytest.approx(ref.item(), rel=1e-6)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(gg, gw, rtol=1e-5, atol=1e-9)
