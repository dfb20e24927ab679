"""Run a command and report its peak memory, sampled from /proc (not a test).

Peak of the process tree's VmRSS and of its parts: RssAnon (heap, numpy arrays: what the process
itself holds) and RssFile (file pages it has mapped, e.g. a memory-mapped store: reclaimable page
cache the kernel counts in RSS while mapped), sampled every ``--every`` seconds, plus the kernel's
own VmHWM of the main process and its ``ru_maxrss`` (children, at exit). Prints one JSON line.

  python bench/rss_peak.py [--every 0.05] [--label NAME] -- csmae evaluate --embeddings EMB --out R
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for k in kids:
        out += [int(k), *_children(int(k))]
    return out


def _status(pid: int) -> dict[str, int]:
    got: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                got[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return got


def run(cmd: list[str], every: float = 0.05) -> dict[str, object]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "VmHWM": 0}
    while proc.poll() is None:
        tree = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        for pid in (proc.pid, *_children(proc.pid)):
            st = _status(pid)
            for k in tree:
                tree[k] += st.get(k, 0)
            if pid == proc.pid:
                peak["VmHWM"] = max(peak["VmHWM"], st.get("VmHWM", 0))
        for k in tree:
            peak[k] = max(peak[k], tree[k])
        time.sleep(every)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
        "peak_rss_mb": round(peak["VmRSS"] / 2**20),
        "peak_anon_mb": round(peak["RssAnon"] / 2**20),
        "peak_file_mb": round(peak["RssFile"] / 2**20),
        "vmhwm_mb": round(peak["VmHWM"] / 2**20),
        "ru_maxrss_mb": round(ru.ru_maxrss / 1024),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--every", type=float, default=0.05)
    p.add_argument("--label", default="")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    res = run(cmd, a.every)
    print(json.dumps({"label": a.label, **res, "cmd": " ".join(cmd)}), flush=True)
    return 0 if res["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
