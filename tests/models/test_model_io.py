"""save_pretrained / from_pretrained round trips and mismatch errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import csmae
from csmae.models import create_model, from_pretrained, list_models
from csmae.models.io import load_weights

from .model_helpers import random_batch, tiny_overrides


@pytest.mark.parametrize("name", list_models("*_tiny"))
def test_roundtrip_identical_descriptors(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, **tiny_overrides(name, mask_ratio=0.6, pooling="token")).eval()
    out = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "manifest.json",
        "model.safetensors",
    ]
    loaded = csmae.from_pretrained(out)
    assert not loaded.training
    assert loaded.config == model.config and loaded.sensors == model.sensors
    batch = random_batch(model)
    with torch.no_grad():
        a, b = model.embed(batch), loaded.embed(batch)
    for s in a:
        assert torch.equal(a[s], b[s])
    keys = list(load_file(str(out / "model.safetensors")))
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in keys)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["variant_spec"] == model.config.spec.to_dict()
    assert cfg["sensors"]["s1" if "s1" in model.sensors else "s2"]["bands"]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_config_json_records_sensors_and_overwrite(tmp_path):
    model = create_model("csmae_cecd_tiny", **tiny_overrides("csmae_cecd_tiny", s2_bands="all"))
    model.save_pretrained(tmp_path / "m")
    model.save_pretrained(tmp_path / "m")  # overwriting a model folder is fine
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (
        cfg["sensors"]["s2"]["bands"] == list(model.sensors["s2"].bands)
        and len(cfg["sensors"]["s2"]["mean"]) == 12
    )
    assert cfg["pooling"] == "avg" and cfg["loss_weights"]["mim"] == 1.0
    assert "csmae_cecd_tiny" in (tmp_path / "m" / "README.md").read_text()


def test_checkpoint_of_another_variant_or_size(tmp_path):
    sesd = create_model("csmae_sesd_tiny", **tiny_overrides("csmae_sesd_tiny"))
    cecd = create_model("csmae_cecd_tiny", **tiny_overrides("csmae_cecd_tiny"))
    with pytest.raises(ValueError, match="another variant or size"):
        load_weights(cecd, sesd.state_dict())
    sesd.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="another variant or size.*shape mismatch"):
        from_pretrained(tmp_path / "m", embed_dim=64)
    assert from_pretrained(tmp_path / "m", mask_ratio=0.75).config.mask_ratio == 0.75


def test_not_a_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        from_pretrained(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "data.bin").write_text("x")
    with pytest.raises(FileExistsError):
        create_model("mae_s1_tiny", **tiny_overrides("mae_s1_tiny")).save_pretrained(tmp_path / "x")
