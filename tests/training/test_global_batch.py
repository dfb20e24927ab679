"""Global-batch semantics: 2 gloo processes at batch B compute the loss and gradients of 1 process at 2B.

The two ranks run :func:`csmae.training.module.step_loss` (the training step's loss) on their
halves of one global batch, then average the gradients over ranks as DDP does; the test process
computes the same global batch on its own. The MIM negatives come from the gather, the mask noise
from the per-sample keys, so the two must agree to float32 rounding (1e-6).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from csmae.training.module import step_loss
from csmae.training.sample_rng import keys_to_tensor, sample_keys

TINY = dict(embed_dim=48, num_heads=3, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
#: name -> (preset, overrides): every variant with a MIM term, the dual encoder, and MDE
CASES = {
    "sesd": ("csmae_sesd_tiny", dict(private_depth=1, shared_depth=1)),
    "secd": ("csmae_secd_tiny", dict(private_depth=1, shared_depth=1)),
    "cesd": ("csmae_cesd_tiny", dict(private_depth=1, shared_depth=1)),
    "cecd": ("csmae_cecd_tiny", dict(private_depth=1, shared_depth=1)),
    "dual_encoder": ("dual_encoder_tiny", dict(private_depth=1, shared_depth=1)),
    "sesd_mde_disjoint": ("csmae_sesd_tiny", dict(private_depth=1, shared_depth=1, w_mde=1.0,
                                                   mask_strategy="disjoint")),
}

WORKER = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from tests.training.test_global_batch import CASES, global_batch, make_model
    from csmae.training.module import step_loss
    torch.set_num_threads(1)
    rank, world, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    runs = [(c, int(n), p == "1") for c, n, p in (r.split(":") for r in sys.argv[4:])]
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    for name, n, per_rank in runs:
        if True:
            model = make_model(name)
            batch = global_batch(model, n)
            sizes = [n // world + (1 if r < n % world else 0) for r in range(world)]
            lo = sum(sizes[:rank])
            mine = {k: (v[lo:lo + sizes[rank]] if k != "global_n" else v) for k, v in batch.items()}
            loss, _ = step_loss(model, mine, list(model.sensors), rank=rank, world_size=world,
                                per_rank_mim=per_rank)
            loss.backward()
            grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
            for g in grads.values():  # what DDP does: the mean over ranks
                dist.all_reduce(g)
                g /= world
            total = loss.detach().clone()
            dist.all_reduce(total)
            results[(name, n, per_rank)] = (float(total) / world, grads)
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()
""")


def make_model(name: str):
    import csmae

    preset, overrides = CASES[name]
    torch.manual_seed(0)
    return csmae.create_model(preset, **TINY, **overrides)


def global_batch(model, n: int) -> dict:
    """A deterministic global batch of ``n`` pairs with the keys of places 0..n-1 of epoch 3."""
    g = torch.Generator().manual_seed(11)
    batch: dict = {
        s: torch.randn(n, spec.num_channels, 120, 120, generator=g) for s, spec in model.sensors.items()
    }
    batch["key"] = keys_to_tensor(sample_keys(5, 3, range(n)))
    batch["global_n"] = n
    return batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: (case, global batch, per-rank MIM) run by default: every kind of model, an even and an uneven split,
#: and the per-rank form as a guard; the slow test runs every case at both batch sizes
FAST = [("sesd", 8, False), ("sesd", 8, True), ("cecd", 5, False), ("dual_encoder", 8, False)]
ALL = [(c, n, False) for c in CASES for n in (8, 5)]


def _run_two_ranks(out, runs) -> dict:
    """Results of the 2-process runs: {(case, global batch, per_rank): (mean loss, mean grads)}."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    args = [f"{c}:{n}:{int(p)}" for c, n, p in runs]
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(r), "2", str(out), *args], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in range(2)
    ]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-3000:] for e in errs)
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return _run_two_ranks(tmp_path_factory.mktemp("ranks") / "rank0.pt", FAST)


def _check(results, case, n):
    model = make_model(case)
    loss, terms = step_loss(model, global_batch(model, n), list(model.sensors))
    loss.backward()
    got_loss, got_grads = results[(case, n, False)]
    assert got_loss == pytest.approx(float(loss.detach()), abs=1e-6)
    want = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert want.keys() == got_grads.keys() and len(want) > 10
    for k, g in want.items():
        torch.testing.assert_close(got_grads[k], g, atol=1e-6, rtol=0, msg=k)
    return float(loss.detach()), want


@pytest.mark.parametrize("case,n", [(c, n) for c, n, p in FAST if not p])  # n=5: 3 + 2, an uneven split
def test_two_ranks_equal_one_device_at_the_global_batch(two_ranks, case, n):
    _check(two_ranks, case, n)


def test_per_rank_negatives_are_another_objective(two_ranks):
    """Guard: with trainer.mim_per_rank the loss and gradients differ, and the comparison above sees it."""
    loss, grads = _check(two_ranks, "sesd", 8)
    per_rank_loss, per_rank_grads = two_ranks[("sesd", 8, True)]
    assert abs(per_rank_loss - loss) > 1e-3
    assert any(not torch.allclose(per_rank_grads[k], g, atol=1e-6, rtol=0) for k, g in grads.items())


@pytest.mark.slow
def test_every_variant_at_both_batch_sizes(tmp_path):
    results = _run_two_ranks(tmp_path / "rank0.pt", ALL)
    for case, n, _ in ALL:
        _check(results, case, n)
