"""Import of reference-implementation checkpoints: the shared parity fixture and synthetic variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from csmae.cli import main as cli_main
from csmae.models import from_pretrained, import_reference
from csmae.models.reference import config_from_reference_args, to_reference_state_dict
from csmae.sensors import REFERENCE_S1_BANDS, REFERENCE_S2_BANDS

REFERENCE_ORDER = list(REFERENCE_S2_BANDS) + list(REFERENCE_S1_BANDS)


def fixture_batch(model, imgs: np.ndarray, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The fixture's 12-channel, transposed images -> normally oriented per-sensor batch, by band name."""
    x = torch.from_numpy(imgs).transpose(-2, -1).to(dtype)
    return {s: x[:, [REFERENCE_ORDER.index(b) for b in spec.bands]] for s, spec in model.sensors.items()}


@pytest.fixture(scope="module")
def cecd(parity_dir):
    d = parity_dir / "cecd"
    return d, np.load(d / "expected.npz")


@pytest.mark.parametrize("precision", ["fp64", "fp32"])
def test_reference_parity_fixture(cecd, precision):
    d, e = cecd
    model = import_reference(d / "model.ckpt", d / "args.yaml")
    assert model.sensors["s1"].bands == REFERENCE_S1_BANDS and model.sensors["s2"].bands == REFERENCE_S2_BANDS
    assert model.config.input_transpose and model.config.variant == "cecd"
    dtype = torch.float64 if precision == "fp64" else torch.float32
    sfx, feat_tol, pred_tol, loss_rel = (
        ("", 1e-9, 5e-7, 1e-9) if precision == "fp64" else ("_fp32", 1e-5, 2e-5, 1e-5)
    )
    model = model.to(dtype)
    batch = fixture_batch(model, e["imgs"], dtype)
    noise = {s: torch.from_numpy(e[f"noise_{s}"]) for s in ("s1", "s2")}
    with torch.no_grad():
        feats = model.embed(batch)
        out = model.forward_train(batch, noise=noise)
        _, terms = model.training_loss(out=out)
    for s in ("s1", "s2"):
        np.testing.assert_allclose(feats[s].numpy(), e[f"feat_{s}{sfx}"], atol=feat_tol, rtol=0)
        np.testing.assert_array_equal(out.mask[s].numpy(), e[f"mask_{s}"])
        np.testing.assert_array_equal(out.ids_restore[s].numpy(), e[f"ids_restore_{s}"])
        np.testing.assert_allclose(out.features[s].numpy(), e[f"train_feat_{s}{sfx}"], atol=feat_tol, rtol=0)
    for src in ("s1", "s2"):
        for tgt in ("s1", "s2"):
            np.testing.assert_allclose(
                out.pred[(src, tgt)].numpy(), e[f"pred_{tgt}_from_{src}"], atol=pred_tol, rtol=0
            )
    names = {
        "umr_s1": "loss_umr_s1",
        "umr_s2": "loss_umr_s2",
        "cmr_s2_from_s1": "loss_cmr_s2_from_s1",
        "cmr_s1_from_s2": "loss_cmr_s1_from_s2",
        "reconstruction": "loss_reconstruction",
        "mim": "loss_mim",
        "loss": "loss_total",
    }
    for ours, theirs in names.items():
        assert terms[ours].item() == pytest.approx(float(e[theirs + sfx]), rel=loss_rel), ours


def test_cli_import_reference(cecd, tmp_path):
    d, e = cecd
    out = tmp_path / "imported"
    assert (
        cli_main(
            ["import-reference", str(d / "model.ckpt"), "--config", str(d / "args.yaml"), "--out", str(out)]
        )
        == 0
    )
    model = from_pretrained(out)
    with torch.no_grad():
        feats = model.embed(fixture_batch(model, e["imgs"]))
    np.testing.assert_allclose(feats["s2"].numpy(), e["feat_s2_fp32"], atol=1e-5, rtol=0)


def _reference_args(decoding: str, private: int, shared: int, pool: str = "avg") -> dict:
    return {
        "backbone": {
            "name": "vit_custom",
            "kwargs": {
                "patch_size": 15,
                "img_size": 120,
                "in_chans": 12,
                "multi_sensor_encoder_depth": private,
                "cross_sensor_encoder_depth": shared,
                "masking_strategy": "random",
                "global_pool": pool,
                "embed_dim": 48,
                "num_heads": 2,
                "mlp_ratio": 4,
            },
        },
        "method_kwargs": {
            "decoder_embed_dim": 32,
            "decoder_depth": 2,
            "decoder_num_heads": 4,
            "decoding_strategy": decoding,
            "reconstruction_strategy": "disjoint",
            "mask_ratio": 0.5,
            "norm_pix_loss": False,
            "apply_umr_loss": True,
            "apply_cmr_loss": True,
            "apply_mde_loss": False,
            "apply_mim_loss": True,
            "mim_temp": 0.5,
        },
    }


@pytest.mark.parametrize(
    "decoding,private,shared,pool",
    [
        ("specific", 2, 1, "avg"),  # SESD layout
        ("common", 2, 1, "avg"),  # SECD
        ("specific", 3, 0, "avg"),  # CESD
        ("common", 0, 2, "token"),  # no private blocks (no per-sensor norm), CLS pooling
    ],
)
def test_synthetic_reference_layouts(tmp_path, decoding, private, shared, pool):
    args = _reference_args(decoding, private, shared, pool)
    torch.manual_seed(0)
    from csmae.models.csmae import CrossSensorMAE

    src = CrossSensorMAE(config_from_reference_args(args))
    with torch.no_grad():  # random values everywhere, so that a wrong mapping shows
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref_state = to_reference_state_dict(src)
    assert any(k.startswith("decoder_s1_to_s2." if decoding == "specific" else "decoder.") for k in ref_state)
    torch.save({"state_dict": ref_state}, tmp_path / "m.ckpt")
    (tmp_path / "args.yaml").write_text(yaml.safe_dump(args))
    model = import_reference(tmp_path / "m.ckpt", tmp_path / "args.yaml")
    g = torch.Generator().manual_seed(3)
    batch = {s: torch.randn(2, spec.num_channels, 120, 120, generator=g) for s, spec in model.sensors.items()}
    noise = {s: torch.rand(2, 64, generator=g) for s in model.sensors}
    src.eval()
    with torch.no_grad():
        for s, f in model.embed(batch).items():
            assert torch.equal(f, src.embed(batch)[s])
        a, b = model.forward_train(batch, noise), src.forward_train(batch, noise)
    assert set(a.pred) == {(x, y) for x in ("s1", "s2") for y in ("s1", "s2")}
    for k in a.pred:
        assert torch.equal(a.pred[k], b.pred[k])


def test_reference_checkpoint_of_another_variant(tmp_path):
    sesd = _reference_args("specific", 2, 1)
    cecd = _reference_args("common", 3, 0)
    from csmae.models.csmae import CrossSensorMAE

    torch.save(
        {"state_dict": to_reference_state_dict(CrossSensorMAE(config_from_reference_args(sesd)))},
        tmp_path / "m.ckpt",
    )
    (tmp_path / "args.yaml").write_text(yaml.safe_dump(cecd))
    with pytest.raises(ValueError, match="another variant or size"):
        import_reference(tmp_path / "m.ckpt", tmp_path / "args.yaml")
    bad = _reference_args("common", 3, 0)
    bad["method_kwargs"]["reconstruction_strategy"] = "identical"
    with pytest.raises(ValueError, match="reconstruction_strategy"):
        config_from_reference_args(bad)
