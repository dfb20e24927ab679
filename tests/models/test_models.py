"""Every registered model: shapes, gradients, masking semantics, inference, training, bad input."""

from __future__ import annotations

import pytest
import torch

from csmae.models import create_model, get_config, list_models
from csmae.models.config import SIZES, VARIANTS

from .model_helpers import fixed_noise, random_batch, tiny_overrides

ALL = list_models()


def test_registry_presets():
    assert len(ALL) == len(SIZES) * (len(VARIANTS) + 3)
    for size, (dim, heads) in SIZES.items():
        for variant, spec in VARIANTS.items():
            c = get_config(f"csmae_{variant}_{size}")
            assert (c.embed_dim, c.num_heads, c.private_depth, c.shared_depth, c.decoder_sharing) == (
                dim,
                heads,
                spec.private_depth,
                spec.shared_depth,
                spec.decoder_sharing,
            )
            assert c.private_depth + c.shared_depth == 12
            assert (c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads, c.patch_size) == (
                512,
                8,
                16,
                15,
            )
        assert get_config(f"mae_s1_{size}").sensors == ("s1",)
        assert get_config(f"mae_s2_{size}").reconstruction_pairs() == [("s2", "s2")]
        dual = get_config(f"dual_encoder_{size}")
        assert not dual.uses_decoder and dual.w_mim > 0
    assert list_models("csmae_*_base") == [f"csmae_{v}_base" for v in sorted(VARIANTS)]


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name, **tiny_overrides(name))
    batch = random_batch(model)
    out = model.forward_train(batch)
    cfg = model.config
    keep = int(64 * (1 - cfg.mask_ratio))
    assert set(out.pred) == set(cfg.reconstruction_pairs())
    for (_src, tgt), p in out.pred.items():
        assert p.shape == (3, 64, 15 * 15 * model.sensors[tgt].num_channels)
    for s in model.sensors:
        assert out.mask[s].shape == (3, 64) and out.ids_restore[s].shape == (3, 64)
        assert out.features[s].shape == (3, model.embed_dim)
        assert (out.mask[s].sum(1) == 64 - keep).all()
    loss, terms = model.training_loss(out=out)
    assert terms["loss"] is loss and torch.isfinite(loss)
    loss.backward()
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("name", ALL)
def test_embed_never_masks(name):
    torch.manual_seed(0)
    model = create_model(name, **tiny_overrides(name, mask_strategy="disjoint", mask_ratio=0.75)).eval()
    batch = random_batch(model)
    with torch.no_grad():
        emb = model.embed(batch)
        assert set(emb) == set(model.sensors)
        # the same weights with a 0 % mask: every token kept (shuffled; pooling is order-free)
        full = create_model(name, **tiny_overrides(name, mask_strategy="random", mask_ratio=0.0)).eval()
        full.load_state_dict(model.state_dict())
        ref = full.forward_train(batch).features
        for s in model.sensors:
            assert emb[s].shape == (3, model.embed_dim)
            torch.testing.assert_close(emb[s], ref[s], atol=1e-4, rtol=1e-4)
            one = model.embed({s: batch[s]})  # a batch may hold one sensor only
            assert list(one) == [s]
            torch.testing.assert_close(one[s], emb[s], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_every_model_trains(name):
    torch.manual_seed(0)
    model = create_model(name, **tiny_overrides(name))
    batch, noise = random_batch(model, n=2), fixed_noise(model, n=2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(5):
        loss, _ = model.training_loss(batch, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("strategy", ["random", "identical", "disjoint"])
def test_masking_strategies_in_the_model(strategy):
    model = create_model("csmae_sesd_tiny", **tiny_overrides("csmae_sesd_tiny", mask_strategy=strategy))
    out = model.forward_train(random_batch(model))
    m1, m2 = out.mask["s1"], out.mask["s2"]
    expect = {
        "identical": lambda: torch.equal(m1, m2),
        "disjoint": lambda: torch.equal(m1 + m2, torch.ones_like(m1)),
        "random": lambda: not torch.equal(m1, m2) and not torch.equal(m1 + m2, torch.ones_like(m1)),
    }
    assert expect[strategy]()


def test_injected_noise_reproduces_exactly():
    model = create_model("csmae_secd_tiny", **tiny_overrides("csmae_secd_tiny"))
    batch, noise = random_batch(model), fixed_noise(model)
    a, b = model.training_loss(batch, noise=noise)[1], model.training_loss(batch, noise=noise)[1]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_loss_weights_are_configuration():
    model = create_model(
        "csmae_cecd_tiny", **tiny_overrides("csmae_cecd_tiny", w_cmr=0.0, w_mde=0.5, w_mim=2.0)
    )
    assert model.pairs == [("s1", "s1"), ("s2", "s2")]
    loss, terms = model.training_loss(random_batch(model))
    assert set(terms) == {"umr_s1", "umr_s2", "reconstruction", "mim", "mde", "loss"}
    want = terms["umr_s1"] + terms["umr_s2"] + 2.0 * terms["mim"] + 0.5 * terms["mde"]
    torch.testing.assert_close(loss, want)


def test_any_split_and_token_pooling():
    model = create_model(
        "csmae_sesd_tiny",
        **tiny_overrides("csmae_sesd_tiny", private_depth=1, shared_depth=3, pooling="token"),
    )
    assert (
        len(model.encoder.private["s1"]) == 1 and len(model.encoder.shared) == 3 and model.pool_norm is None
    )
    loss, _ = model.training_loss(random_batch(model))
    loss.backward()


def test_bf16_autocast_cpu():
    model = create_model("csmae_sesd_tiny", **tiny_overrides("csmae_sesd_tiny"))
    batch = random_batch(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, terms = model.training_loss(batch)
        emb = model.embed(batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(e).all() for e in emb.values())


def test_reconstruct_pictures():
    model = create_model("csmae_secd_tiny", **tiny_overrides("csmae_secd_tiny"))
    batch = random_batch(model, n=2)
    with torch.no_grad():
        rec = model.reconstruct(batch)
    assert set(rec["pred"]) == {(a, b) for a in ("s1", "s2") for b in ("s1", "s2")}
    assert rec["pred"][("s1", "s2")].shape == (2, 10, 120, 120)
    torch.testing.assert_close(rec["input"]["s2"], batch["s2"])
    zero_frac = (rec["masked"]["s1"] == 0).float().mean().item()
    assert zero_frac == pytest.approx(0.5, abs=0.01)


# ------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def small_model():
    return create_model("csmae_sesd_tiny", **tiny_overrides("csmae_sesd_tiny")).eval()


def test_wrong_channel_count(small_model):
    with pytest.raises(
        ValueError, match=r"s2: expected .*\(N, 10, 120, 120\).*B02.*got shape \(2, 12, 120, 120\)"
    ):
        small_model.embed({"s2": torch.zeros(2, 12, 120, 120)})


def test_wrong_image_size(small_model):
    with pytest.raises(ValueError, match=r"\(N, 2, 120, 120\).*got shape \(1, 2, 64, 64\)"):
        small_model.embed({"s1": torch.zeros(1, 2, 64, 64)})


def test_wrong_band_order(small_model):
    with pytest.raises(ValueError, match="band order"):
        small_model.embed({"s1": torch.zeros(1, 2, 120, 120), "bands": {"s1": ["VH", "VV"]}})


def test_missing_and_foreign_sensors():
    model = create_model("mae_s1_tiny", **tiny_overrides("mae_s1_tiny"))
    with pytest.raises(ValueError, match="does not have"):
        model.embed({"s2": torch.zeros(1, 10, 120, 120)})
    pair = create_model("csmae_cesd_tiny", **tiny_overrides("csmae_cesd_tiny"))
    with pytest.raises(ValueError, match="every sensor"):
        pair.forward_train({"s1": torch.zeros(1, 2, 120, 120)})


def test_unknown_preset_and_override():
    with pytest.raises(KeyError, match="csmae_sesd_base"):
        create_model("csmae_xxxx_base")
    with pytest.raises(ValueError, match="valid keys.*mask_ratio"):
        create_model("csmae_sesd_tiny", mask_ration=0.7)
    with pytest.raises(ValueError, match="mask_strategy"):
        create_model("csmae_sesd_tiny", mask_strategy="checkerboard")


def test_band_overrides_change_the_stem():
    model = create_model("csmae_sesd_tiny", **tiny_overrides("csmae_sesd_tiny", s2_bands="all"))
    assert len(model.sensors["s2"].bands) == 12
    assert model.encoder.stems["s2"].proj.weight.shape[1] == 12


def test_attention_paths_agree_and_auto_policy():
    """timm's fused SDPA and explicit attention give the same model; "auto" picks explicit under CPU bf16."""
    model = create_model("csmae_cesd_tiny", **tiny_overrides("csmae_cesd_tiny")).eval()
    batch = random_batch(model, n=2)
    with torch.no_grad():
        model.config.attention = "fused"
        fused = model.embed(batch)
        assert all(m.fused_attn for m in model._attention)
        model.config.attention = "math"
        explicit = model.embed(batch)
        model.config.attention = "auto"
        model.embed(batch)
        assert all(m.fused_attn for m in model._attention)  # fp32 on CPU: fused
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.embed(batch)
        assert not any(m.fused_attn for m in model._attention)
    for s in fused:
        torch.testing.assert_close(fused[s], explicit[s], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="attention"):
        create_model("csmae_cesd_tiny", attention="flash")
