"""Two CPU processes (gloo) through Lightning DDP, launched by ``csmae fit`` itself.

Global-batch semantics end to end: 2 processes at ``data.batch_size=4`` train the same weights
(to 1e-5, fp32) as 1 process at 8: the same data order, the same flips and masks per sample, the
MIM negatives gathered over ranks, the incomplete last batch split over ranks and weighted.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file


def test_two_process_ddp_on_cpu(tmp_path, reben_lmdb, tiny):
    from csmae.training.config import load_config
    from csmae.training.run import fit

    run = tmp_path / "run"
    # 18 pairs, 4 per device x 2 devices: global batches of 8, 8 and 2 (1 + 1) per epoch
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
    assert "trained 2 epoch(s), 6 step(s)" in summary[0]
    assert json.loads((run / "manifest.json").read_text())["status"] == "completed"
    # each optimiser step consumed a global batch of 8 (samples/s counts all ranks)
    with open(run / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    lrs = [float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")]
    assert max(lrs) > 1e-3 * 1.5  # linear scaling: peak lr = 1e-3 * 8 / 4
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6
    weights = load_file(str(run / "model" / "model.safetensors"))
    for k, v in weights.items():
        assert torch.equal(v, ckpt["state_dict"][f"model.{k}"]), k
    # one process at the global batch (8) lands on the same weights
    single = [o for o in overrides if not o.startswith(("trainer.devices", "trainer.strategy"))]
    one = fit(load_config(None, [*single, "data.batch_size=8"]), out=tmp_path / "one")
    assert one.steps == 6
    ref = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    for k, v in ref.items():
        a, b = weights[k], v
        if k.endswith("attn.qkv.bias"):
            # The key bias (middle third) shifts every logit of a query by the same q.b_k: softmax
            # ignores it, its true gradient is exactly 0 and AdamW's normalised update of it is
            # rounding noise (1e-9 gradients -> lr-sized steps) on one device as on two. Not compared.
            d = a.shape[0] // 3
            a, b = torch.cat([a[:d], a[2 * d :]]), torch.cat([b[:d], b[2 * d :]])
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=k)
    # guard: training moved the weights far more than the tolerance
    init = csmae_init(load_config(None, single))
    assert max(float((ref[k] - init[k]).abs().max()) for k in ref) > 1e-3


def csmae_init(cfg):
    """The initial weights of a run's model (the same seed as fit)."""
    import lightning.pytorch as pl

    from csmae.training.run import build_model

    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    return build_model(cfg).state_dict()
