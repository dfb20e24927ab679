"""The ``auto`` precision policy: bf16 only where the device runs bf16 matmuls natively."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from csmae.models import precision as prec
from csmae.models.precision import choose_precision, cpu_bf16


@pytest.fixture
def fake_cpu(monkeypatch):
    """``fake_cpu(x86=True, avx512_bf16=False, amx=False, mkldnn=False)``: the CPU the policy sees."""

    def make(*, x86: bool = True, avx512_bf16: bool = False, amx: bool = False, mkldnn: bool = False):
        flags = {"_is_avx512_bf16_supported": avx512_bf16, "_is_amx_tile_supported": amx}
        monkeypatch.setattr(prec, "is_x86", lambda: x86)
        monkeypatch.setattr(prec, "_torch_cpu_check", lambda name: flags.get(name))
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn, raising=False)
        cpu_bf16.cache_clear()

    yield make
    cpu_bf16.cache_clear()


def _records(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == prec.__name__ and r.levelno == level]


@pytest.mark.parametrize(
    ("cpu", "want", "why"),
    [
        (dict(avx512_bf16=True), "bf16", "AVX512-BF16"),
        (dict(amx=True), "bf16", "AMX"),
        (dict(), "fp32", "no native bf16"),
        (dict(mkldnn=True), "fp32", "no native bf16"),  # AVX-512 without BF16: oneDNN emulates, no gain
        (dict(x86=False, mkldnn=True), "bf16", "native bf16"),  # Arm with the BF16 extension
        (dict(x86=False), "fp32", "no native bf16"),
    ],
)
def test_auto_is_bf16_only_on_native_bf16_cpus_with_one_line(fake_cpu, caplog, cpu, want, why):
    fake_cpu(**cpu)
    with caplog.at_level(logging.INFO, logger=prec.__name__):
        got = choose_precision("auto", "cpu", what="embedding precision")
    assert got.precision == want and why in got.reason
    lines = _records(caplog, logging.INFO)
    assert len(lines) == 1 and lines[0].startswith(f"embedding precision: {want} (auto;") and why in lines[0]
    assert got.describe() == {"requested": "auto", "used": want, "reason": got.reason, "device": "cpu"}


def test_explicit_precision_is_obeyed_and_emulated_bf16_warns_once(fake_cpu, caplog):
    fake_cpu()  # AVX2 only
    with caplog.at_level(logging.INFO, logger=prec.__name__):
        assert choose_precision("bf16", "cpu").precision == "bf16"
    warned = _records(caplog, logging.WARNING)
    assert len(warned) == 1 and "no native bf16" in warned[0] and "auto or fp32" in warned[0]
    caplog.clear()
    fake_cpu(avx512_bf16=True)
    with caplog.at_level(logging.INFO, logger=prec.__name__):
        assert choose_precision("bf16", "cpu").precision == "bf16"
        assert choose_precision("fp32", "cpu").precision == "fp32"
    assert not _records(caplog, logging.WARNING)
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision("fp16", "cpu")


def test_cuda_and_other_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert choose_precision("auto", "cuda").precision == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert choose_precision("auto", "cuda").precision == "fp32"  # emulated bf16 (pre-Ampere) is not native
    assert choose_precision("auto", "meta").precision == "fp32"


def _seconds(fn, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def test_auto_never_picks_a_precision_measured_much_slower_here():
    """On the machine running the tests: time a ViT-B-sized Linear as embedding runs it, in both
    precisions, and check that ``auto`` did not choose the one measured more than 2x slower (on an
    AVX2-only CPU bf16 was 8x slower, on AVX512-BF16 ~2x faster; on every CPU one of the two
    assertions below has teeth)."""
    cpu_bf16.cache_clear()
    torch.manual_seed(0)
    lin = torch.nn.Linear(768, 3072)
    x = torch.randn(512, 768)
    low = torch.nn.Linear(768, 3072)
    low.load_state_dict(lin.state_dict())
    prec.cast_matmul_weights(low)

    def fp32() -> None:
        with torch.inference_mode():
            lin(x)

    def bf16() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            low(x)

    fp32(), bf16()  # warm-up
    t32, t16 = _seconds(fp32), _seconds(bf16)
    chosen = choose_precision("auto", "cpu").precision
    if chosen == "bf16":
        assert t16 <= 2 * t32, f"auto chose bf16, measured {t16 / t32:.1f}x the fp32 time"
    else:
        assert t32 <= 2 * t16, f"auto chose fp32, measured {t32 / t16:.1f}x the bf16 time"
