"""Config keys of the global batch work: global_batch_size, drop_last, mim_per_rank, compile."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from csmae.training.config import ConfigError, load_config
from csmae.training.datamodule import PairDataModule
from csmae.training.gather import check_gather_possible
from csmae.training.run import fit


def test_defaults_keep_the_last_batch_and_gather_negatives():
    cfg = load_config(None)
    assert cfg.data.drop_last is False and cfg.data.global_batch_size is None
    assert cfg.trainer.mim_per_rank is False and cfg.trainer.compile is False


def _dm(world: int, accumulate: int, **data) -> PairDataModule:
    cfg = load_config(None, [f"data.{k}={v}" for k, v in data.items()])
    dm = PairDataModule(cfg.data, {}, seed=0)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=world, accumulate_grad_batches=accumulate)  # type: ignore[assignment]
    return dm


def test_global_batch_size_is_split_over_devices_and_accumulation():
    assert _dm(4, 2, global_batch_size=128).resolve_batch_size() == 16
    assert _dm(1, 1, global_batch_size=128, batch_size=7).resolve_batch_size() == 128
    assert _dm(4, 1, batch_size=32).resolve_batch_size() == 32  # per device when not set
    with pytest.raises(ConfigError, match=r"global_batch_size 100 does not divide over 4 device\(s\) x 2"):
        _dm(4, 2, global_batch_size=100).resolve_batch_size()
    with pytest.raises(ConfigError, match="global_batch_size must be null or >= 1"):
        load_config(None, ["data.global_batch_size=0"])


def test_global_batch_not_dividing_fails_before_training(tmp_path, v1_roots, tiny):
    cfg = load_config(
        None, tiny(list(v1_roots), "data.global_batch_size=5", "trainer.accumulate_grad_batches=2")
    )
    with pytest.raises(ConfigError, match="does not divide"):
        fit(cfg, out=tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and not list((tmp_path / "run" / "checkpoints").iterdir())


def test_gather_without_a_process_group_is_refused():
    check_gather_possible(1)  # one device: nothing to gather
    with pytest.raises(RuntimeError, match=r"(?s)gathers descriptors over 2 ranks.*trainer.strategy=ddp"):
        check_gather_possible(2)


def test_compile_on_an_unsupported_accelerator_is_refused():
    import csmae
    from csmae.training.trainer import compile_model

    model = csmae.create_model("csmae_sesd_tiny", embed_dim=48, num_heads=3, private_depth=1, shared_depth=1)
    with pytest.raises(ConfigError, match="not supported on accelerator 'mps'"):
        compile_model(model, load_config(None, ["trainer.compile=true", "trainer.accelerator=mps"]))


def test_compile_without_a_cpp_compiler_is_refused(monkeypatch):
    import shutil

    import csmae
    from csmae.training.trainer import compile_model

    monkeypatch.setattr(shutil, "which", lambda name: None)
    model = csmae.create_model("csmae_sesd_tiny", embed_dim=48, num_heads=3, private_depth=1, shared_depth=1)
    with pytest.raises(ConfigError, match="needs a C.. compiler"):
        compile_model(model, load_config(None, ["trainer.compile=true", "trainer.accelerator=cpu"]))
    assert not hasattr(model.encoder, "_compiled_call_impl") or model.encoder._compiled_call_impl is None


@pytest.mark.slow
def test_compile_trains_like_eager(tmp_path, reben_lmdb, tiny):
    """trainer.compile=true runs (inductor on CPU: ~6 min under load on 2 cores) and trains as eager does."""
    from safetensors.torch import load_file

    base = tiny([reben_lmdb], "trainer.max_steps=3")
    compiled = fit(load_config(None, [*base, "trainer.compile=true"]), out=tmp_path / "compiled")
    eager = fit(load_config(None, base), out=tmp_path / "eager")
    assert compiled.steps == eager.steps == 3
    assert compiled.final_loss == pytest.approx(eager.final_loss, rel=1e-4)
    a = load_file(str(tmp_path / "compiled" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "eager" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()  # compiling in place keeps the state-dict keys
