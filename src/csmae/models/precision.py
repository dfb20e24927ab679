"""Which precision to compute in (``auto``), and bf16 parameter copies for inference under autocast.

**The ``auto`` policy** (the default of ``csmae embed``, ``ingest``, the evaluation's candidate pass,
``csmae fit``'s ``trainer.precision`` and the demo): bf16 only where the device runs bf16 matmuls
natively, fp32 everywhere else.

* x86 CPU: bf16 when the CPU has AVX512-BF16 or AMX (``torch.cpu._is_avx512_bf16_supported()`` /
  ``_is_amx_tile_supported()``, the ``avx512_bf16`` / ``amx_tile`` flags of ``lscpu``). Without them
  oneDNN has no bf16 kernels (AVX2-only CPUs: most laptops, AMD Zen 2/3, older Xeons) or emulates
  them with AVX-512 at no gain over fp32: on a 2-core AMD EPYC Zen 2 (AVX2) a bf16 ``nn.Linear`` ran
  at 15 GFLOP/s against 117 for fp32 (8x slower), a bare bf16 ``a @ b`` at 0.30 against 108 (360x).
* Arm CPU: bf16 when oneDNN reports native bf16 (the BF16 extension).
* CUDA: bf16 when the GPU computes bf16 natively (compute capability >= 8.0, no emulation).
* anything else (MPS, unknown): fp32.

The decision is a fact of the CPU's feature flags, not a timed probe (a probe costs time and is
noisy on a shared machine); ``tests/models/test_precision.py`` times both precisions on the machine
the tests run on and checks that ``auto`` never picks one measured much slower. An explicit ``bf16``
is obeyed, with one warning line where the device would emulate it. Every decision is logged as one
line saying which and why, and recorded in the artefact's manifest (``precision``: what ran;
``precision_choice``: what was asked, what ran and why).

**bf16 parameter copies** (:func:`cast_matmul_weights`): under ``torch.autocast(dtype=bfloat16)``
every ``nn.Linear`` / ``nn.Conv2d`` call casts its fp32 weight and bias to bf16 (round to nearest)
before the matmul, batch after batch. Holding those parameters in bf16 gives the same kernel the same
bf16 operands, so the outputs are identical bit for bit, without the per-batch casts (embedding on
the 2-core Zen 4 dev CPU: +8 %, bench/README.md ``## Issue 13``). LayerNorm weights, tokens and other
parameters stay fp32 (autocast leaves them, and CPU LayerNorm needs fp32 parameters with fp32
inputs). The model must then only run under bf16 autocast.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

#: What ``--precision`` accepts for embedding and the candidate pass.
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a job runs in: ``precision`` (``"bf16"`` or ``"fp32"``), asked for and why."""

    precision: str
    requested: str
    reason: str
    device: str

    def describe(self) -> dict[str, Any]:
        """What manifests record (``precision_choice``)."""
        return {"requested": self.requested, "used": self.precision, "reason": self.reason,
                "device": self.device}

    def line(self, what: str) -> str:
        """One line for the log: which precision, and why."""
        how = "auto" if self.requested == "auto" else "as requested"
        return f"{what}: {self.precision} ({how}; {self.reason})"


def is_x86() -> bool:
    """True on an x86-64 (or 32-bit x86) CPU."""
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return set()
    for row in text.splitlines():
        if row.startswith("flags"):
            return set(row.partition(":")[2].split())
    return set()


@functools.lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """The CPU's vendor id (``GenuineIntel``, ``AuthenticAMD``, ...; ``""`` when unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for row in f:
                if row.startswith("vendor_id"):
                    return row.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def _torch_cpu_check(name: str) -> bool | None:
    """``torch.cpu.<name>()`` (private helpers of torch), or None when this torch lacks it."""
    fn = getattr(torch.cpu, name, None)
    if fn is None:
        return None
    try:
        return bool(fn())
    except (RuntimeError, AttributeError):
        return None


@functools.lru_cache(maxsize=1)
def cpu_bf16() -> tuple[bool, str]:
    """(whether this CPU runs bf16 matmuls natively, a short description of why)."""
    if is_x86():
        avx = _torch_cpu_check("_is_avx512_bf16_supported")
        amx = _torch_cpu_check("_is_amx_tile_supported")
        if avx is None or amx is None:
            flags = _cpu_flags()
            avx = "avx512_bf16" in flags if avx is None else avx
            amx = "amx_bf16" in flags if amx is None else amx
        if amx:
            return True, "this CPU has AMX bf16 tiles"
        if avx:
            return True, "this CPU has AVX512-BF16"
        isa = torch.backends.cpu.get_cpu_capability()
        return False, (f"this CPU ({isa}) has no native bf16 matmul (no AVX512-BF16, no AMX): bf16 is "
                       "emulated there, measured 8-360x slower than fp32 on an AVX2 CPU")
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    arch = platform.machine() or "this"
    if native:
        return True, f"this {arch} CPU has native bf16 (oneDNN)"
    return False, f"this {arch} CPU has no native bf16 matmul (oneDNN)"


def device_bf16(device: torch.device | str) -> tuple[bool, str]:
    """(whether ``device`` runs bf16 matmuls natively, why)."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return cpu_bf16()
    if dev.type == "cuda":
        try:
            ok = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except (RuntimeError, AssertionError, TypeError):
            ok = False
        if ok:
            return True, "this GPU computes bf16 natively"
        return False, "this GPU has no native bf16 (compute capability < 8.0)"
    return False, f"device {dev.type}: bf16 is used only where it is known to be native"


def choose_precision(
    requested: str, device: torch.device | str, *, what: str = "precision"
) -> PrecisionChoice:
    """Resolve ``"auto"`` | ``"bf16"`` | ``"fp32"`` on ``device`` (see the module docstring).

    Logs one info line with the decision (``what`` names the job), or one warning line when bf16 is
    requested explicitly where the device would emulate it.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {requested!r}")
    dev = torch.device(device)
    native, why = device_bf16(dev)
    if requested == "auto":
        choice = PrecisionChoice("bf16" if native else "fp32", "auto", why, dev.type)
        log.info("%s", choice.line(what))
    elif requested == "bf16" and not native:
        choice = PrecisionChoice("bf16", "bf16", why, dev.type)
        log.warning("%s: bf16 as requested, but %s; precision auto or fp32 would be faster", what, why)
    else:
        choice = PrecisionChoice(requested, requested, "requested", dev.type)
        log.info("%s", choice.line(what))
    return choice


#: ``trainer.precision`` values (Lightning) per resolved precision.
LIGHTNING = {"bf16": "bf16-mixed", "fp32": "32"}


def cast_matmul_weights(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> list[nn.Parameter]:
    """Cast the parameters of every Linear and Conv2d of ``model`` to ``dtype`` in place; return them."""
    low = [
        p
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
        for p in m.parameters(recurse=False)
    ]
    for p in low:
        p.data = p.data.to(dtype)
    return low
