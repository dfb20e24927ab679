"""Loss functions against hand computations on tiny tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from csmae import losses


def _mse_by_hand(pred, target, mask, norm_pix):
    total, count = 0.0, 0.0
    for n in range(pred.shape[0]):
        for m in range(pred.shape[1]):
            t = target[n, m]
            if norm_pix:
                t = (t - t.mean()) / math.sqrt(t.var(ddof=1) + 1e-6)
            total += float(mask[n, m]) * float(((pred[n, m] - t) ** 2).mean())
            count += float(mask[n, m])
    return total / count


@pytest.mark.parametrize("norm_pix", [False, True])
def test_masked_mse(norm_pix):
    g = torch.Generator().manual_seed(0)
    pred, target = (
        torch.randn(2, 5, 6, generator=g, dtype=torch.float64),
        torch.randn(2, 5, 6, generator=g, dtype=torch.float64),
    )
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.float32)
    got = losses.masked_mse(pred, target, mask, norm_pix=norm_pix).item()
    assert got == pytest.approx(_mse_by_hand(pred.numpy(), target.numpy(), mask.numpy(), norm_pix), rel=1e-12)


def test_reconstruction_terms_use_the_source_mask():
    g = torch.Generator().manual_seed(1)
    t = {"s1": torch.randn(2, 4, 3, generator=g), "s2": torch.randn(2, 4, 5, generator=g)}
    m = {
        "s1": torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]]),
        "s2": torch.tensor([[0.0, 1, 1, 0], [1, 0, 1, 1]]),
    }
    pred = {
        ("s1", "s1"): torch.randn(2, 4, 3, generator=g),
        ("s1", "s2"): torch.randn(2, 4, 5, generator=g),
        ("s2", "s1"): torch.randn(2, 4, 3, generator=g),
        ("s2", "s2"): torch.randn(2, 4, 5, generator=g),
    }
    terms = losses.reconstruction_terms(pred, t, m)
    assert set(terms) == {"umr_s1", "umr_s2", "cmr_s2_from_s1", "cmr_s1_from_s2"}
    for (src, tgt), p in pred.items():
        name = f"umr_{tgt}" if src == tgt else f"cmr_{tgt}_from_{src}"
        want = _mse_by_hand(p.double().numpy(), t[tgt].double().numpy(), m[src].numpy(), False)
        assert terms[name].item() == pytest.approx(want, rel=1e-5)


def test_nt_xent_by_hand():
    g = torch.Generator().manual_seed(2)
    z1, z2 = (
        torch.randn(3, 4, generator=g, dtype=torch.float64),
        torch.randn(3, 4, generator=g, dtype=torch.float64),
    )
    tau = 0.5
    z = np.concatenate([z1.numpy(), z2.numpy()])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    b, rows = 3, []
    for i in range(2 * b):
        partner = (i + b) % (2 * b)
        num = math.exp(z[i] @ z[partner] / tau)
        den = sum(math.exp(z[i] @ z[j] / tau) for j in range(2 * b) if j != i)
        rows.append(-math.log(num / den))
    assert losses.nt_xent(z1, z2, tau).item() == pytest.approx(np.mean(rows), rel=1e-12)


def test_mde_by_hand_and_gradient_direction():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64, requires_grad=True)
    z2 = torch.tensor([[1.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    cos = [1 / math.sqrt(2), -1.0]
    want = -np.mean([math.log1p(math.exp(c)) for c in cos])
    got = losses.mde_loss(z1, z2)
    assert got.item() == pytest.approx(want, rel=1e-12)
    got.backward()  # minimising must pull z1[0] towards z2[0] (a descent step raises the cosine)
    step = z1.detach() - 0.1 * z1.grad
    assert torch.cosine_similarity(step, z2)[0] > cos[0] + 1e-3


def test_weighted_total_and_bf16_inputs():
    terms = {
        "umr_s1": torch.tensor(2.0),
        "cmr_s2_from_s1": torch.tensor(3.0),
        "mim": torch.tensor(5.0),
        "reconstruction": torch.tensor(100.0),
    }
    assert losses.weighted_total(terms, {"umr": 1.0, "cmr": 0.5, "mim": 2.0}).item() == pytest.approx(13.5)
    with pytest.raises(ValueError):
        losses.weighted_total(terms, {"mde": 1.0})
    p = torch.randn(2, 3, 4).bfloat16()
    assert losses.masked_mse(p, p.float(), torch.ones(2, 3)).dtype == torch.float32
