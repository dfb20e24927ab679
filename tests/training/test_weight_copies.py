"""trainer.bf16_weight_copies: same weights through ``csmae fit``, fp32 checkpoints, exact resume."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from csmae.training.config import ConfigError, load_config
from csmae.training.run import fit
from csmae.training.weight_copies import Bf16WeightCopies
from tests.training.crash import Crash, CrashAt

BF16 = ["trainer.precision=bf16-mixed"]


def _weights(res) -> dict[str, torch.Tensor]:
    return load_file(str(res.model_dir / "model.safetensors"))


def test_refused_without_bf16_mixed_or_with_compile(synth_store, tiny):
    with pytest.raises(ConfigError, match="bf16_weight_copies.*bf16-mixed"):
        load_config(None, tiny([synth_store], "trainer.bf16_weight_copies=true"))  # tiny runs at 32
    with pytest.raises(ConfigError, match="bf16_weight_copies.*compile"):
        load_config(
            None, tiny([synth_store], *BF16, "trainer.bf16_weight_copies=true", "trainer.compile=true")
        )
    assert load_config(None, tiny([synth_store])).trainer.bf16_weight_copies is False


def test_copies_give_autocast_gradients_on_the_fp32_masters():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight  # a weight shared by two modules gets one copy
    model = nn.Sequential(a, nn.LayerNorm(4), b, nn.GELU(), b)  # b called twice
    wc = Bf16WeightCopies(model=model)
    assert len(wc.copies) == 3 and all(c.dtype == torch.bfloat16 for c in wc.copies)
    x = torch.randn(5, 4)
    # Lightning's autocast (no cast cache): each call casts, the gradients of the calls add in fp32
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        ref = model(x).float().square().sum()
    ref.backward()
    want = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    with wc.swapped(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        seen = []
        h = b.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        loss = model(x).float().square().sum()
        h.remove()
    assert seen == [torch.bfloat16, torch.bfloat16] and not wc.stale
    assert all(p.dtype == torch.float32 for p in model.parameters())  # masters back after the block
    assert torch.equal(loss, ref)
    loss.backward()
    for k, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert torch.equal(p.grad, want[k]), k
    with torch.no_grad():
        a.weight.add_(0.25)
    wc.stale = True
    with wc.swapped():
        assert torch.equal(wc.copies[0], a.weight.to(torch.bfloat16))  # refreshed from the masters


def test_fit_with_copies_trains_the_same_weights(tmp_path, synth_store, tiny, monkeypatch):
    """bf16 steps through Lightning (accumulation 2, clipping: Lightning refuses it with fused AdamW
    under AMP): identical weights, fp32 checkpoint."""
    refreshes = []
    real = Bf16WeightCopies.refresh
    monkeypatch.setattr(Bf16WeightCopies, "refresh", lambda self: (refreshes.append(1), real(self))[1])
    extra = [*BF16, "trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=0.05",
             "optim.fused=false", "callbacks.checkpoint_every_n_epochs=1"]
    weights = {}
    for on in ("false", "true"):
        res = fit(load_config(None, tiny([synth_store], *extra, f"trainer.bf16_weight_copies={on}",
                                         epochs=2)), out=tmp_path / on)
        assert res.steps >= 4
        weights[on] = _weights(res)
    assert len(refreshes) == res.steps  # first forward + after each optimiser step but the last
    ckpt = torch.load(tmp_path / "true" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert all(v.dtype != torch.bfloat16 for v in ckpt["state_dict"].values())
    moments = [s["exp_avg"] for s in ckpt["optimizer_states"][0]["state"].values()]
    assert moments and all(m.dtype == torch.float32 for m in moments)
    assert weights["true"].keys() == weights["false"].keys()
    for k, v in weights["false"].items():
        assert v.dtype == torch.float32
        assert torch.equal(weights["true"][k], v), k


def test_resume_with_copies_is_exact(tmp_path, synth_store, tiny):
    """Crash mid-run, resume from last.ckpt (the copies are refreshed from the loaded masters)."""
    over = tiny([synth_store], *BF16, "trainer.bf16_weight_copies=true",
                "callbacks.checkpoint_every_n_steps=2", "data.hflip=true", epochs=2)
    with pytest.raises(Crash):
        fit(load_config(None, over), out=tmp_path / "crashed", callbacks=[CrashAt(5)])
    last = tmp_path / "crashed" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    resumed = fit(load_config(None, over), out=tmp_path / "crashed", resume=True)
    ref = fit(load_config(None, over), out=tmp_path / "ref")
    assert resumed.steps == ref.steps
    wa, wb = _weights(resumed), _weights(ref)
    for k in wb:
        assert torch.equal(wa[k], wb[k]), k
