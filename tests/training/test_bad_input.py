"""Bad input: clear errors and nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from csmae.cli import main
from csmae.training.config import load_config
from csmae.training.run import fit


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_missing_data_path_names_the_key(tmp_path, tiny, capsys):
    args = ["fit", "--out", str(tmp_path / "run"), "--set", *tiny([tmp_path / "nope"])]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "data.sources[0]" in err and "nope" in err and "does not exist" in err


def test_batch_larger_than_dataset(tmp_path, v1_roots, tiny):
    cfg = load_config(None, tiny(list(v1_roots), batch_size=7))
    with pytest.raises(ValueError, match=r"data.batch_size 7 .* larger than the 6 training pairs"):
        fit(cfg, out=tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and not (tmp_path / "run" / "model").exists()


def test_store_without_a_sensor_the_model_needs(tmp_path, reben_lmdb, tiny):
    from csmae.data.prepare import prepare

    store = tmp_path / "s2only"
    prepare([reben_lmdb], store, sensors=("s2",))
    cfg = load_config(None, tiny([store]))
    with pytest.raises(ValueError, match=r"(?i)s1"):
        fit(cfg, out=tmp_path / "run")
    # a single-sensor model trains on it
    ok = load_config(None, tiny([store], "model.name=mae_s2_tiny", "model.overrides.private_depth=0"))
    assert fit(ok, out=tmp_path / "run2").steps == 5  # 18 pairs at batch 4, the partial batch kept


def test_existing_run_folder_is_not_overwritten(tmp_path, v1_roots, tiny):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--resume"):
        fit(load_config(None, tiny(list(v1_roots), batch_size=3)), out=run)
    assert _snapshot(run).keys() == {"keep.txt"}


def test_corrupted_checkpoint_on_resume(tmp_path, v1_roots, tiny):
    run = tmp_path / "run"
    cfg = load_config(None, tiny(list(v1_roots), batch_size=3))
    fit(cfg, out=run)
    ckpt = run / "checkpoints" / "last.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    before = _snapshot(run)
    with pytest.raises(RuntimeError, match=r"corrupted or unreadable.*nothing was changed"):
        fit(cfg, out=run, resume=True)
    assert _snapshot(run) == before
    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(RuntimeError, match="corrupted"):
        fit(cfg, out=run, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(cfg, out=run, resume=str(run / "checkpoints" / "other.ckpt"))


def test_fp16_amp_on_cpu_is_refused(capsys):
    assert main(["fit", "--set", "trainer.precision=16-mixed", "trainer.accelerator=cpu", "--dry-run"]) == 1
    assert "needs a GPU" in capsys.readouterr().err


class _PoisonAt(pl.Callback):
    """Puts a NaN into a weight right before training step ``step`` (a stand-in for a diverging run)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.model.parameters()).view(-1)[0] = float("nan")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, reben_lmdb, tiny):
    run = tmp_path / "run"
    cfg = load_config(None, tiny([reben_lmdb], "callbacks.checkpoint_every_n_steps=1", epochs=3))
    with pytest.raises(RuntimeError, match=r"not finite\) at step 5 .*Last good checkpoint: .*last.ckpt"):
        fit(cfg, out=run, callbacks=[_PoisonAt(5)])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"
    assert not (run / "model").exists()
