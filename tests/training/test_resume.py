"""Kill -9 mid-epoch, resume, and land on exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from csmae.training.config import load_config
from csmae.training.run import fit
from tests.training.crash import Crash, CrashAt

KILLER = textwrap.dedent("""
    import os, signal, sys
    import lightning.pytorch as pl
    from csmae.training.config import load_config
    from csmae.training.run import fit

    class KillAt(pl.Callback):
        # SIGKILL right before the optimiser step `step`: no cleanup, no final save.
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)

    cfg = load_config(None, sys.argv[3:])
    fit(cfg, out=sys.argv[1], callbacks=[KillAt()])
""")


def test_kill9_mid_epoch_then_resume_matches_uninterrupted(tmp_path, reben_lmdb, tiny):
    # 18 pairs / batch 4 = 5 batches per epoch (the last one of 2 pairs), 3 epochs = 15 steps; last.ckpt
    # every 2 steps and at epoch ends. Killed before step 7 runs: the last checkpoint is step 6 = epoch 1
    # after 1 of 5 batches.
    overrides = tiny(
        [reben_lmdb],
        "callbacks.checkpoint_every_n_steps=2",
        "data.hflip=true",
        "data.vflip=true",
        "schedule.warmup_epochs=1",
        epochs=3,
    )
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(killed), "7", *overrides],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (killed / "model").exists()
    ckpt = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6 and ckpt["epoch"] == 1
    (loader_state,) = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state["epoch"] == 1 and loader_state["batches_done"] == 1  # honestly mid-epoch

    resumed = fit(load_config(None, overrides), out=killed, resume=True)
    ref = fit(load_config(None, overrides), out=tmp_path / "ref")
    assert resumed.steps == ref.steps == 15 and resumed.epochs == ref.epochs == 3
    wa = load_file(str(killed / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "ref" / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # a crash right after an epoch-end checkpoint (step 10 = end of epoch 1) resumes at epoch 2's start
    at_end = tmp_path / "at_end"
    with pytest.raises(Crash):
        fit(load_config(None, overrides), out=at_end, callbacks=[CrashAt(10)])
    end_state = torch.load(at_end / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert end_state["global_step"] == 10
    assert end_state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["epoch"] == 2
    fit(load_config(None, overrides), out=at_end, resume=True)
    wc = load_file(str(at_end / "model" / "model.safetensors"))
    assert all(torch.equal(wc[k], wb[k]) for k in wb)
    # the resume keeps the first session's config and metrics and records its own
    assert (killed / "config.yaml").exists() and (killed / "config.resume.yaml").exists()
    first = (killed / "logs" / "metrics.csv").read_text().splitlines()
    second = (killed / "logs" / "resume-1" / "metrics.csv").read_text().splitlines()
    assert len(first) > 1 and len(second) > 1


@pytest.mark.parametrize(
    "kill_workers,resume_workers,every,ckpt_step,batches_done,extra",
    [
        (1, 2, 2, 6, 1, []),  # last.ckpt mid-epoch: epoch 1 after 1 of 5 batches
        # last.ckpt at epoch 0's end (step and epoch checkpoints), with validation and max_steps set
        (2, 1, 5, 5, 0, ["data.val_split=val", "trainer.max_steps=10"]),
    ],
)
def test_kill9_with_loader_workers_resumes_exactly(
    tmp_path, reben_lmdb, tiny, kill_workers, resume_workers, every, ckpt_step, batches_done, extra
):
    """Issue 14.1: with loader workers a resumed run trained on other batches than the uninterrupted one.

    Causes: a DataLoader with workers iterates its sampler twice while building its iterator (the
    mid-epoch skip was spent on the first); resumed from an epoch-end checkpoint with validation on
    and max_steps set, Lightning counts the finished epoch twice (it hands the sampler the next
    epoch's number and stops an epoch early). Killed with ``kill_workers``
    loader workers, resumed with ``resume_workers``: bit-identical to an uninterrupted run without
    workers (the data and the draws do not depend on the workers).
    """
    base = tiny(
        [reben_lmdb],
        f"callbacks.checkpoint_every_n_steps={every}",
        "data.hflip=true",
        "data.vflip=true",
        "data.prefetch_factor=2",
        *extra,
        epochs=2,
    )
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(  # 5 batches per epoch, killed before step 7
        [sys.executable, "-c", KILLER, str(killed), "7", *base, f"data.num_workers={kill_workers}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    ckpt = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == ckpt_step
    (state,) = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert state["epoch"] == 1 and state["batches_done"] == batches_done
    resumed = fit(load_config(None, [*base, f"data.num_workers={resume_workers}"]), out=killed, resume=True)
    ref = fit(load_config(None, [*base, "data.num_workers=0"]), out=tmp_path / "ref")
    assert resumed.steps == ref.steps == 10 and resumed.epochs == ref.epochs == 2
    wa = load_file(str(killed / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "ref" / "model" / "model.safetensors"))
    for k in wb:
        assert torch.equal(wa[k], wb[k]), k


def test_resume_without_the_data_order_state_would_differ(tmp_path, reben_lmdb, tiny):
    """Guard for the test above: a different data order (seed) does change the final weights."""
    overrides = tiny([reben_lmdb], "data.hflip=true", epochs=1)
    a = fit(load_config(None, overrides), out=tmp_path / "a")
    b = fit(load_config(None, overrides + ["trainer.seed=43"]), out=tmp_path / "b")
    wa = load_file(str(Path(a.run_dir) / "model" / "model.safetensors"))
    wb = load_file(str(Path(b.run_dir) / "model" / "model.safetensors"))
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
