"""``fit`` end to end on tiny models: real samples, synthetic archives, stores, reproducibility."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from safetensors.torch import load_file

import csmae
from csmae.training.config import load_config
from csmae.training.run import fit


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "logs" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_fit_real_reben_lmdb_writes_a_complete_run_folder(tmp_path, reben_lmdb, tiny):
    cfg = load_config(
        None,
        tiny(
            [reben_lmdb],
            "data.val_split=val",
            "callbacks.recon_pictures=true",
            "callbacks.pictures_n_samples=2",
            "callbacks.checkpoint_every_n_steps=2",
            "data.hflip=true",
            "data.vflip=true",
        ),
    )
    run = tmp_path / "run"
    res = fit(cfg, out=run)
    # 18 pairs at batch 4: four full batches and the last partial one (data.drop_last false, as the reference)
    assert res.steps == 5 and res.epochs == 1 and res.final_loss is not None
    assert res.model_dir == run / "model" and "final loss" in res.summary()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kind"] == "csmae-run" and manifest["status"] == "completed" and manifest["steps"] == 5
    assert load_config(run / "config.yaml") == cfg  # resolved config reloads to the same config
    rows = _metrics(run)
    losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    assert len(losses) == 5 and all(v == v for v in losses)
    assert any(r.get("val/loss") for r in rows) and any(r.get("train/umr_s2_step") for r in rows)
    assert any(r.get("train/mim_step") for r in rows) and any(r.get("perf/samples_per_s") for r in rows)
    assert list((run / "logs").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not list(run.rglob("*.tmp-*"))
    png = run / "pictures" / "epoch-000.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the saved model is the trained one: same weights as the last checkpoint, and it moved from init
    model = csmae.from_pretrained(run / "model")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][f"model.{k}"]), k
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)  # as fit() does before building
    init = csmae.create_model(cfg.model.name, **cfg.model.overrides).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in model.state_dict().items())


def test_fit_real_v1_folders(tmp_path, v1_roots, tiny):
    cfg = load_config(None, tiny(list(v1_roots), batch_size=3))
    res = fit(cfg, out=tmp_path / "run")
    assert res.steps == 2 and (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_fit_synthetic_v1_archive_with_splits_and_retrieval(tmp_path, synth_v1, tiny):
    cfg = load_config(
        None,
        tiny(
            synth_v1,
            "data.split=train",
            "data.val_split=val",
            "callbacks.retrieval_every_n_epochs=1",
            "callbacks.retrieval_max_samples=8",
            "callbacks.retrieval_ks=[1, 2]",
        ),
    )
    res = fit(cfg, out=tmp_path / "run")
    assert res.steps >= 1
    rows = _metrics(tmp_path / "run")
    try:
        from csmae.retrieval import evaluate  # noqa: F401
    except ImportError:
        pytest.skip("csmae.retrieval.evaluate not available yet")
    keys = {k for r in rows for k, v in r.items() if v and k.startswith("retrieval/")}
    assert {"retrieval/s1-s2/map@2", "retrieval/s2-s1/map@2", "retrieval/s1-s1/map@2"} <= keys


def test_fit_from_stores_real_and_synthetic(tmp_path, reben_store, synth_store, tiny):
    for name, store in (("real", reben_store), ("synth", synth_store)):
        cfg = load_config(None, tiny([store], "data.num_workers=1"))
        res = fit(cfg, out=tmp_path / name)
        assert res.steps >= 1 and res.final_loss is not None, name


def test_same_config_twice_gives_identical_weights_whatever_the_workers(tmp_path, synth_store, tiny):
    base = tiny([synth_store], "data.split=train", epochs=2)
    a = fit(load_config(None, base + ["data.num_workers=0"]), out=tmp_path / "a")
    b = fit(load_config(None, base + ["data.num_workers=2"]), out=tmp_path / "b")
    assert a.steps == b.steps > 2
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    c = fit(load_config(None, base + ["trainer.seed=7"]), out=tmp_path / "c")
    assert c.steps == a.steps
    assert any(not torch.equal(wa[k], v) for k, v in _weights(tmp_path / "c").items())


def test_bf16_mixed_on_cpu(tmp_path, v1_roots, tiny):
    cfg = load_config(None, tiny(list(v1_roots), "trainer.precision=bf16-mixed", batch_size=3))
    res = fit(cfg, out=tmp_path / "run")
    assert res.final_loss is not None and res.final_loss == res.final_loss
    w = _weights(tmp_path / "run")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in w.values())
