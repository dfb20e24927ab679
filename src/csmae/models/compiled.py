"""``model.embed`` compiled by ``torch.compile`` (inductor, freezing) where it pays, eager otherwise.

On CPU, inductor with **freezing** folds the weights into the graph and prepacks them for oneDNN,
fusing linear + GELU and the elementwise tails: the same descriptors within bf16/fp32 rounding
(bench/README.md ``## compiled embedding``). Plain ``torch.compile`` without freezing gains nothing
there, so this module only ever compiles with freezing, under inference mode.

:func:`compiled_embed` returns a :class:`CompiledEmbed`, a drop-in for ``model.embed`` that

* compiles only on CPUs with AMX (where it was measured 1.25-1.50x for ViT-B; on the AVX512-BF16
  Zen 4 dev CPU without AMX it was 0.88-0.91x in bf16; on an AVX2-only Zen 2 in fp32, side by side
  under load 4-11, ViT-B 0.81x, 1.14x and 1.19x, ViT-S 1.21x, 1.00x and 0.96x in three runs, nearly
  quiet ViT-B 1.03x and ViT-S 0.90x, and 0.72x with inductor's own GEMM template, ``max_autotune``:
  no consistent gain), for jobs of at least ``min_pairs`` pairs
  (compiling costs minutes), and only when inductor, a C++ compiler and (for bf16) a CPU with native
  bf16 exist;
* pads every batch to one fixed size (one graph, no recompilation for the last, smaller batch);
* checks its first batch against eager: the lowest cosine similarity must reach ``1 - tolerance``;
* times its second batch against the first batch's eager run and turns itself off (one info line)
  when it is not faster on this machine (a busy CPU can make it slower);
* falls back to eager, with **one** warning line, on any failure (no compiler, compile failing half
  way, a broken on-disk cache, descriptors off the tolerance) and stays eager from then on.

Inductor keeps its compiled kernels in an on-disk cache (``TORCHINDUCTOR_CACHE_DIR``; default here
``$XDG_CACHE_HOME/csmae/inductor/torch-<version>``), so a second run of the same model and batch size
skips the C++ compilation; the torch version in the folder name keeps caches of different torch
builds apart. csmae stamps the cache it uses with the torch version (:data:`STAMP`); a cache stamped by
another torch (``TORCHINDUCTOR_CACHE_DIR`` pointing at an old one) or with an unreadable stamp is not
used: eager, with one line naming the folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: Pairs below which compiling is not tried on CPU. Measured on the 2-core Zen 4 dev CPU (bench/README.md
#: ``## compiled embedding``): ViT-S bf16 pays from ~9k pairs with a cold inductor cache, ~2k with a
#: warm one; ViT-B compiles in 100-300 s. 16k pairs (~20 min of ViT-B eager here) bounds a compile
#: that does not pay to a small share of the job.
MIN_PAIRS = 16384
#: Lowest accepted cosine similarity of compiled vs eager descriptors is ``1 - TOLERANCE[precision]``.
TOLERANCE = {"bf16": 1e-3, "fp32": 1e-5}


def default_cache_dir() -> Path:
    """Where inductor's on-disk cache goes unless ``TORCHINDUCTOR_CACHE_DIR`` is set."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "csmae" / "inductor" / f"torch-{torch.__version__}"


#: A file csmae writes into the inductor cache it uses: which torch filled it.
STAMP = "csmae-inductor-cache.json"


def cache_problem(cache: Path) -> str | None:
    """None when this torch may use the inductor cache ``cache``; otherwise why not (one line).

    A cache csmae filled with another torch version (its :data:`STAMP` names that version), or an
    unreadable stamp, is not used: compiled kernels and graphs are tied to the torch build. (Inductor
    keys its entries by torch version too, so an unstamped foreign cache only misses.)
    """
    stamp = cache / STAMP
    if stamp.is_symlink() or (stamp.exists() and not stamp.is_file()):
        return f"{stamp} is not a regular file: not using this inductor cache"
    if not stamp.exists():
        return None
    try:
        made_by = json.loads(stamp.read_text(encoding="utf-8"))["torch"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{stamp} is unreadable: not using this inductor cache (delete the folder to rebuild it)"
    if made_by != torch.__version__:
        return (f"the inductor cache {cache} was filled by torch {made_by}, this is torch "
                f"{torch.__version__} (delete it, or set TORCHINDUCTOR_CACHE_DIR to another folder)")
    return None


def stamp_cache(cache: Path) -> None:
    """Record this torch version in ``cache`` (created if missing)."""
    from csmae.atomic import write_json_atomic

    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / STAMP).exists():
        write_json_atomic(cache / STAMP, {"torch": torch.__version__})


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would use on CPU, or None when none is installed (or no inductor)."""
    try:
        from torch._inductor import config as inductor_config
    except ImportError:
        return None
    cxx = inductor_config.cpp.cxx
    named = cxx[0] if isinstance(cxx, tuple) and cxx and cxx[0] else None
    for c in (named, os.environ.get("CXX"), "g++", "c++", "clang++"):
        if c and shutil.which(c):
            return c
    return None


def inductor_available() -> bool:
    """True when torch's inductor backend imports."""
    try:
        import torch._inductor.config  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_has_bf16() -> bool:
    """True when this CPU runs bf16 matmuls natively (AVX512-BF16 or AMX; :mod:`csmae.models.precision`)."""
    from csmae.models.precision import cpu_bf16

    return cpu_bf16()[0]


def cpu_has_amx() -> bool:
    """True when this CPU has AMX tiles (``amx_bf16`` in /proc/cpuinfo; Linux only, else False)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return " amx_bf16" in f.read(1 << 20)
    except OSError:
        return False


def why_not_compile(device: torch.device, precision: str, pairs: int, min_pairs: int) -> str | None:
    """None when compiling should pay here; otherwise the reason it is not tried (for the log)."""
    if device.type != "cpu":
        return f"device {device.type} (compiled embedding is measured to pay on CPU only)"
    if not cpu_has_amx():
        return ("this CPU has no AMX (without it the compiled ViT-B was measured 0.81-1.19x of eager, "
                "1.03x on a quiet AVX2 CPU: no consistent gain)")
    if pairs < min_pairs:
        return f"{pairs} pairs to embed, below the {min_pairs} where compiling pays"
    if not inductor_available():
        return "this torch has no working inductor backend (torch._inductor does not import)"
    if cxx_compiler() is None:
        return "no C++ compiler found for inductor (install g++)"
    if precision == "bf16" and not cpu_has_bf16():
        return "this CPU has no native bf16 kernels"
    return None


def _pad(batch: Mapping[str, Any], size: int) -> tuple[dict[str, Any], int]:
    """Tensors of ``batch`` padded along dim 0 to ``size`` rows (repeating the last); (batch, real rows)."""
    out: dict[str, Any] = {}
    n = -1
    for k, v in batch.items():
        if isinstance(v, Tensor) and v.ndim >= 1:
            n = v.shape[0]
            if n < size:
                v = torch.cat([v, v[-1:].expand(size - n, *v.shape[1:])])
        out[k] = v
    return out, n


def _min_cosine(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    cos = [torch.nn.functional.cosine_similarity(a[s].double(), b[s].double(), dim=1).min() for s in a]
    return float(torch.stack(cos).min())


class CompiledEmbed:
    """Callable like ``model.embed``: compiled descriptors, or eager ones after any failure.

    Attributes:
        compiled: True while the compiled graph is in use.
        compiled_batches / eager_batches: how many batches each path embedded.
        reason: why it is eager (None when compiled).
        min_cosine: lowest cosine of compiled vs eager descriptors on the first batch (None before).
        compile_s: seconds the first compiled call took (compilation included).
    """

    def __init__(
        self,
        model: Any,
        *,
        batch_size: int,
        precision: str,
        reason: str | None,
        tolerance: float,
        compiler: Callable[[Callable], Callable] | None = None,
        check_speed: bool = True,
    ) -> None:
        self.model = model
        self.check_speed = check_speed
        self.batch_size = batch_size
        self.precision = precision
        self.tolerance = tolerance
        self.reason = reason
        self.compiled = reason is None
        self.min_cosine: float | None = None
        self.compile_s = 0.0
        self._checked = False
        self._eager_s_per_pair: float | None = None
        self.compiled_batches = 0
        self.eager_batches = 0
        self._fn: Callable | None = None
        if self.compiled:
            make = compiler or _inductor_frozen
            try:
                self._fn = make(model.embed)
            except Exception as e:  # noqa: BLE001 - any failure means: stay eager
                self._give_up(f"torch.compile failed: {type(e).__name__}: {e}")

    def _give_up(self, why: str) -> None:
        self.compiled, self.reason, self._fn = False, why, None
        log.warning("compiled embedding off, using eager: %s", why)

    def describe(self) -> dict[str, Any]:
        """What the embeddings manifest records (``compiled``)."""
        return {
            "used": self.compiled_batches > 0,
            "backend": "inductor-freezing" if self.compiled_batches else "eager",
            "compiled_batches": self.compiled_batches,
            "eager_batches": self.eager_batches,
            "reason": self.reason,
            "tolerance_cosine": self.tolerance,
            "min_cosine_vs_eager": self.min_cosine,
        }

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        if not self.compiled or self._fn is None:
            self.eager_batches += 1
            return self.model.embed(batch)
        padded, n = _pad(batch, self.batch_size)
        if n > self.batch_size:
            self.eager_batches += 1
            return self.model.embed(batch)  # larger than planned: never recompile for it
        t0 = time.perf_counter()
        try:
            got = self._fn(padded)
        except Exception as e:  # noqa: BLE001 - compile failing half way, broken cache, ...
            self._give_up(f"compiled call failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
            self.eager_batches += 1
            return self.model.embed(batch)
        got = {s: v[:n] for s, v in got.items()}
        took = time.perf_counter() - t0
        if not self._checked:
            self.compile_s = took
            self._checked = True
            t1 = time.perf_counter()
            ref = self.model.embed(batch)
            self._eager_s_per_pair = (time.perf_counter() - t1) / max(n, 1)
            self.min_cosine = _min_cosine(got, ref)
            if not self.min_cosine >= 1 - self.tolerance:  # also catches NaN
                self._give_up(
                    f"compiled descriptors differ from eager (lowest cosine {self.min_cosine:.6f} < "
                    f"{1 - self.tolerance:.6f})"
                )
                self.eager_batches += 1
                return ref
            log.info(
                "compiled embedding in use (first batch %.1f s incl. compile; cosine vs eager >= %.6f)",
                self.compile_s,
                self.min_cosine,
            )
        elif self.check_speed and self._eager_s_per_pair is not None:  # the second batch: does it pay?
            eager, compiled = self._eager_s_per_pair, took / max(n, 1)
            self._eager_s_per_pair = None
            if compiled >= eager:
                self.compiled, self._fn = False, None
                self.reason = (
                    f"not faster than eager on this machine ({compiled:.3f} vs {eager:.3f} s per pair)"
                )
                log.info("compiled embedding off after the first batches: %s", self.reason)
        self.compiled_batches += 1
        return got


def _inductor_frozen(fn: Callable) -> Callable:
    """``torch.compile(fn)`` with inductor freezing (weights folded, prepacked) and static shapes."""
    return torch.compile(fn, backend="inductor", dynamic=False, options={"freezing": True})


def compiled_embed(
    model: Any,
    *,
    device: torch.device | str,
    precision: str,
    pairs: int,
    batch_size: int,
    enabled: bool = True,
    min_pairs: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    compiler: Callable[[Callable], Callable] | None = None,
) -> CompiledEmbed:
    """A :class:`CompiledEmbed` for ``model`` (compiled where it pays, see the module docstring).

    Args:
        model: a CrossSensorMAE in eval mode (its weights must not change afterwards).
        device: where it runs.
        precision: ``"bf16"`` (the caller runs it under bf16 autocast) or ``"fp32"``.
        pairs: how many pairs the job embeds (compiling pays only for large jobs).
        batch_size: pairs per call; smaller batches are padded to it (one compiled graph).
        enabled: False (``--no-compile``) means eager.
        min_pairs: the job size from which to compile (default :data:`MIN_PAIRS`).
        cache_dir: inductor's on-disk cache (default: ``TORCHINDUCTOR_CACHE_DIR`` if set, else
            :func:`default_cache_dir`).
        compiler: replaces the torch.compile call (tests).
    """
    dev = torch.device(device)
    threshold = MIN_PAIRS if min_pairs is None else min_pairs
    reason = (
        "switched off (--no-compile)" if not enabled else why_not_compile(dev, precision, pairs, threshold)
    )
    if reason is None:
        cache = Path(cache_dir or os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir())
        reason = cache_problem(cache)
        if reason is None:
            try:
                stamp_cache(cache)
            except OSError as e:
                reason = f"cannot use the inductor cache {cache}: {e}"
        if reason is None:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
        else:
            log.warning("compiled embedding off, using eager: %s", reason)
    else:
        log.info("compiled embedding not used: %s", reason)
    return CompiledEmbed(
        model,
        batch_size=batch_size,
        precision=precision,
        reason=reason,
        tolerance=TOLERANCE.get(precision, 1e-3),
        compiler=compiler,
    )
