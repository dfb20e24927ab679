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


def test_bf16_matmul_weights_give_the_autocast_descriptors_bit_for_bit():
    import copy

    from csmae.models import create_model
    from csmae.models.precision import cast_matmul_weights

    torch.manual_seed(0)
    model = create_model("csmae_sesd_tiny", private_depth=1, shared_depth=1, decoder_depth=1).eval()
    low = copy.deepcopy(model)
    cast = cast_matmul_weights(low)
    assert cast and all(p.dtype == torch.bfloat16 for p in cast)
    assert low.encoder.norm.weight.dtype == torch.float32  # LayerNorms stay fp32
    g = torch.Generator().manual_seed(1)
    x = {s: torch.randn(3, sp.num_channels, 120, 120, generator=g) for s, sp in model.sensors.items()}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = model.embed(x), low.embed(x)
    for s in want:
        assert torch.equal(got[s], want[s]), s
