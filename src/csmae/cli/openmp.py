"""Idle OpenMP threads sleep instead of spinning when the machine is already busy.

torch's CPU kernels run on GNU OpenMP, whose idle threads spin for a while before they sleep. On a
machine with more runnable work than cores (a shared CI box, a laptop doing other things) a spinning
thread takes the core its partner needs, and every parallel region waits for a descheduled thread:
on a 2-core AMD EPYC at load 7-10 one training step of the demo's CSMAE took 9.5-16.2 s with the
default and 1.8-3.5 s with ``OMP_WAIT_POLICY=PASSIVE`` (0.9-1.0 instead of 3.5-4.4 CPU-seconds);
ViT-B embedding took the same wall time with 22 % fewer CPU-seconds (bench/README.md
``## Issue 22 on an AVX2-only CPU``). On an idle machine spinning saves the wake-up of each parallel
region, so the default is kept there.

The policy must be set before the OpenMP runtime loads (with torch), so the ``csmae`` command applies
it first thing; a value the user set is never changed.
"""

from __future__ import annotations

import os
import sys


def calm_openmp_when_busy() -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` when the 1-minute load average is at least the CPU count.

    Returns what was done (for the log), or None when nothing was changed: the user set the policy,
    torch is already loaded (too late to matter), the machine is not busy, or there is no load average.
    """
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules or not hasattr(os, "getloadavg"):
        return None
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load < cpus:
        return None
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return f"load average {load:.1f} on {cpus} CPUs: OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep)"
