"""Peak anonymous memory of each stage of ``csmae index`` over an embeddings folder (not a test).

Wraps the stages of :func:`csmae.retrieval.index_stream.build_streamed` (``scan``, ``create_backend``
(engine creation and training), ``_tune`` (after the add loop), ``finish_build`` (the write)) and
prints, per stage, its wall time, the peak RssAnon and VmRSS (anonymous + mapped file pages)
sampled every 50 ms while it ran, and the process's RSS after it. The add loop runs between
``create_backend`` and ``_tune``: its peak shows in the ``_tune`` line's VmHWM.

  python bench/bench_memory.py make-emb /tmp/emb1m --pairs 500000 --dim 768
  python bench/index_stages.py /tmp/emb1m /tmp/idx1m --kind ivfpq
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def status() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM of this process in MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(line.split()[1]) // 1024
    return out


def main() -> int:
    import csmae.retrieval.index as index_mod
    import csmae.retrieval.index_stream as stream_mod
    from csmae.cli import main as csmae_main

    peak = {"anon": 0, "rss": 0}

    def sample() -> None:
        while True:
            now = status()
            peak["anon"] = max(peak["anon"], now["RssAnon"])
            peak["rss"] = max(peak["rss"], now["VmRSS"])
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()

    def wrap(mod: object, name: str) -> None:
        fn = getattr(mod, name)

        def timed(*a: object, **k: object) -> object:
            peak["anon"] = peak["rss"] = 0
            t0 = time.perf_counter()
            out = fn(*a, **k)
            took = time.perf_counter() - t0
            print(f"{name}: {took:.1f} s, peak RssAnon {peak['anon']} MB, peak VmRSS {peak['rss']} MB, "
                  f"after {status()}", flush=True)
            return out

        setattr(mod, name, timed)

    for name in ("scan", "create_backend", "_tune", "exact_top"):
        wrap(stream_mod, name)
    wrap(index_mod, "finish_build")
    folder, out, *rest = sys.argv[1:]
    return int(csmae_main(["index", folder, "--out", out, *rest]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
