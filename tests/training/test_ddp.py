"""Two CPU processes (gloo) through Lightning DDP, launched by ``csmae fit`` itself."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file


def test_two_process_ddp_on_cpu(tmp_path, reben_lmdb, tiny):
    run = tmp_path / "run"
    # 18 pairs, 4 per device x 2 devices = 2 global batches per epoch
    overrides = tiny(
        [reben_lmdb],
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "optim.lr_scaling=linear",
        "optim.lr_base_batch=4",
        "callbacks.checkpoint_every_n_steps=1",
        epochs=2,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    env.pop("CSMAE_RUN_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "csmae", "fit", "--out", str(run), "--set", *overrides],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("trained ")]
    assert len(summary) == 1, proc.stdout  # printed once, by rank 0
    assert "trained 2 epoch(s), 4 step(s)" in summary[0]
    assert json.loads((run / "manifest.json").read_text())["status"] == "completed"
    # each optimiser step consumed a global batch of 8 (samples/s counts all ranks)
    with open(run / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    lrs = [float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")]
    assert max(lrs) > 1e-3 * 1.5  # linear scaling: peak lr = 1e-3 * 8 / 4
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    weights = load_file(str(run / "model" / "model.safetensors"))
    for k, v in weights.items():
        assert torch.equal(v, ckpt["state_dict"][f"model.{k}"]), k
