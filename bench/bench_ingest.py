"""``csmae ingest`` of one full-size S2 tile + an S1 scene into a 1M-item index, through the CLI.

    nice -n 5 flock /tmp/csmae-bigmem.lock .venv/bin/python bench/bench_ingest.py \\
        --items 1000000 --size 10980 [--workdir /tmp/csmae-bench-ingest] [--keep]
    .venv/bin/python bench/bench_ingest.py --items 20000 --size 1200     # smoke (100 patches)
    .venv/bin/python bench/bench_ingest.py --items 1000000 --add-only --compare /tmp/csmae-old/src --keep

``--add-only``: the add stage alone (``load_embeddings`` of a job's descriptors, ``add_embeddings``
with its ``ingested`` record: what ``csmae ingest`` runs after embedding) of a synthetic job of
(size/120)^2 new pairs, old code vs new, alternating, ``--rounds`` times each.

Inputs (all **synthetic**, written once into ``--workdir`` and reused with ``--keep``):

- the model: the demo's CSMAE architecture (``csmae_sesd_tiny`` with the demo recipe's overrides:
  D = 96, 3 blocks per sensor), random weights (seed 0): it costs what the trained demo model costs;
- the archive: ``--items`` rows from bench/synth_archive.py (places x 20 dates x 2 sensors on the
  UTM 33N place grid around the tile, random unit descriptors of the model's D), an embeddings
  folder made into an exact index by ``csmae index EMB --out IDX`` (timed, peak RSS);
- the scene: bench/bench_tile.py's ``make_scene`` (S2 L2A band COGs of tile T33UUP, 10 m and 20 m,
  and S1 VV/VH float32 COGs in the neighbouring UTM zone at 20 m: every strip a real warp).

Measured: ``csmae ingest --s2 S2 --s1 S1 --model M --index IDX --precision fp32 --json`` in a child
process (``csmae.cli.main``, the entry point of the ``csmae`` command, on a hard-linked copy of the
index so every run starts from the same archive): the seconds per stage the command reports (plan,
checksum = SHA-256 of every product file, tile, embed, add), wall and CPU seconds and peak RSS of
the child (``getrusage``); the child's resident memory sampled every 0.25 s from /proc (anonymous
vs file-backed: the tile and embed stages write and read the intermediate store through memory
maps, whose clean pages the kernel can drop), attributed to the stage running; and the add
stage's parts, timed by wrappers the child puts around csmae's functions (reading the job's
descriptors, loading the index with its checksums verified, the filter columns, adding to the
engine, the commit: the engine's file, the items table, checksums of the new files, manifest).

Prints Markdown table rows and a JSON line. ``--precision fp32`` because this CPU has no native bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``cmd``; (result, wall s / CPU s / peak RSS GB of the child) from wait4."""
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=fo, stderr=fe, text=True)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        fo.seek(0)
        fe.seek(0)
        res = subprocess.CompletedProcess(cmd, os.waitstatus_to_exitcode(status), fo.read(), fe.read())
    return res, {"wall_s": round(wall, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
                 "peak_rss_gb": round(ru.ru_maxrss * 1024 / 1e9, 2)}


def make_model(folder: Path) -> None:
    import torch

    from csmae.demo.recipe import FULL
    from csmae.models import create_model

    torch.manual_seed(0)
    create_model("csmae_sesd_tiny", **FULL.model_overrides("csmae")).save_pretrained(folder)


def linked_copy(src: Path, dst: Path) -> Path:
    """A copy of an index folder whose files are hard links (an update writes new files, never in place)."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        os.link(f, dst / f.name)
    return dst


#: (module, attribute, label): what the child times (stages, and the parts of the add stage)
TIMED = (
    ("csmae.data.scenes.run", "tile_plan", "tile"),
    ("csmae.retrieval.embed", "embed_dataset", "embed"),
    ("csmae.retrieval.embeddings", "load_embeddings", "add: read the job's descriptors"),
    ("csmae.retrieval.index_grow", "add_embeddings", "add: add_embeddings in all"),
    ("csmae.retrieval.index.SearchIndex", "load", "add: load the index (checksums verified)"),
    ("csmae.retrieval.filters.FilterColumns", "__init__", "add: filter columns (live flags)"),
    ("csmae.retrieval.backends.faiss.FaissBackend", "add", "add: add the vectors to the engine"),
    ("csmae.retrieval.index_grow", "_commit", "add: commit in all"),
    ("csmae.retrieval.backends.faiss.FaissBackend", "save", "add: commit: write the engine's file"),
    ("pandas.DataFrame", "to_parquet", "add: commit: write the items table"),
    ("csmae.retrieval.index_grow", "checksum_files", "add: commit: checksums of the new files"),
)


def child(argv: list[str], timings: Path) -> int:
    """Run ``csmae ingest ARGV`` in this process with timers around :data:`TIMED`; write the intervals."""
    import atexit
    import functools
    import importlib

    intervals: list[tuple[str, float, float]] = []
    for mod, attr, label in TIMED:
        parts = mod.split(".")
        owner = None
        for i in range(len(parts), 0, -1):  # a module, or a class inside one
            try:
                owner = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for name in parts[i:]:
                owner = getattr(owner, name)
            break
        fn = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        is_cm = isinstance(fn, classmethod)
        inner = fn.__func__ if is_cm else fn

        def wrap(f, label=label):
            @functools.wraps(f)
            def timed(*a, **kw):
                t0 = time.time()
                try:
                    return f(*a, **kw)
                finally:
                    intervals.append((label, t0, time.time()))
            return timed

        setattr(owner, attr, classmethod(wrap(inner)) if is_cm else wrap(inner))
    atexit.register(lambda: timings.write_text(json.dumps(intervals)))
    from csmae.cli import main

    return int(main(argv) or 0)


ADD_STAGE = """
import json, sys, time
from csmae.retrieval.embeddings import load_embeddings
from csmae.retrieval.index_grow import add_embeddings
t, c = time.perf_counter(), time.process_time()
emb = load_embeddings(sys.argv[2])  # what csmae ingest's add stage does with a job's descriptors
record = {"scene": "bench-job", "digest": "0" * 64, "files": {}, "patches": int(len(set(emb.ids.tolist())))}
add_embeddings(sys.argv[1], emb, ingested=[record])
print(json.dumps({"stage_s": time.perf_counter() - t, "stage_cpu_s": time.process_time() - c}))
"""


def add_side_by_side(args: argparse.Namespace, work: Path, base: Path, model: Path) -> None:
    """The add stage alone (read a job's descriptors, add them, commit), old code vs new, alternating:
    a job of ``--size``/120 squared pairs of new items (synthetic, one date) into a copy of the index."""
    from synth_archive import write_archive

    pairs = (args.size // 120) ** 2
    job = work / f"job-{pairs}"
    if not (job / "manifest.json").exists():
        shutil.rmtree(job, ignore_errors=True)
        write_archive(job, items=2 * pairs, dim=96, dates=1, model_dir=model, prefix="Q")
    trees = {"new": str(REPO / "src"), "old": str(Path(args.compare).resolve())}
    rows: dict[str, list[dict]] = {k: [] for k in trees}
    for rnd in range(args.rounds):
        for name in (list(trees) if rnd % 2 == 0 else list(trees)[::-1]):
            idx = linked_copy(base, work / "idx-add")
            res, ru, _ = run_sampled([sys.executable, "-c", ADD_STAGE, str(idx), str(job)],
                                     {**os.environ, "PYTHONPATH": trees[name]})
            if res.returncode:
                raise SystemExit(res.stderr)
            rec = {**json.loads(res.stdout), **ru, "load": os.getloadavg()[0]}
            rows[name].append(rec)
            print(json.dumps({"src": name, **rec}), flush=True)
    shutil.rmtree(work / "idx-add", ignore_errors=True)
    import statistics

    fields = ("stage_s", "stage_cpu_s", "wall_s", "cpu_s", "peak_rss_gb")
    med = {k: {f: statistics.median(r[f] for r in v) for f in fields} for k, v in rows.items()}
    print(f"\n| add stage, {2 * pairs:,} items into {args.items:,} | new | old | old / new |")
    print("|---|---:|---:|---:|")
    for f, label in (("stage_s", "add stage, wall s"), ("stage_cpu_s", "add stage, CPU s"),
                     ("wall_s", "child process (imports included), wall s"),
                     ("cpu_s", "child process, CPU s"),
                     ("peak_rss_gb", "child process, peak RSS GB")):
        new, old = med["new"][f], med["old"][f]
        print(f"| {label} | {new:.2f} | {old:.2f} | {old / new:.2f}x |")


def run_sampled(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict, list]:
    """Run ``cmd``; (result, wall/CPU/peak RSS, samples (time, VmRSS, RssAnon, RssFile) in GB)."""
    samples: list[tuple[float, float, float, float]] = []
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=fo, stderr=fe, text=True)
        status_file = Path(f"/proc/{proc.pid}/status")
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                f = {ln.split(":")[0]: ln.split()[1] for ln in status_file.read_text().splitlines()
                     if ln.startswith(("VmRSS", "RssAnon", "RssFile"))}
                samples.append((time.time(), *(int(f.get(k, 0)) / 1024**2 for k in ("VmRSS", "RssAnon",
                                                                                    "RssFile"))))
            except (OSError, ValueError):
                pass
            time.sleep(0.25)
        wall = time.perf_counter() - t0
        fo.seek(0)
        fe.seek(0)
        res = subprocess.CompletedProcess(cmd, os.waitstatus_to_exitcode(status), fo.read(), fe.read())
    return res, {"wall_s": round(wall, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
                 "peak_rss_gb": round(ru.ru_maxrss * 1024 / 1e9, 2)}, samples


def stage_memory(samples: list, intervals: list) -> dict[str, dict[str, float]]:
    """Peak VmRSS / RssAnon / RssFile (GB) of the samples inside each stage's interval."""
    out = {}
    for label in ("tile", "embed", "add: add_embeddings in all"):
        spans = [(a, b) for name, a, b in intervals if name == label]
        inside = [s for s in samples if any(a <= s[0] <= b for a, b in spans)]
        if inside:
            out[label.split(":")[0]] = {k: round(max(s[i] for s in inside), 2)
                                        for i, k in ((1, "rss"), (2, "anon"), (3, "file"))}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000, help="archive items before the ingest")
    ap.add_argument("--size", type=int, default=10980, help="S2 tile side in 10 m pixels")
    ap.add_argument("--workdir", default="/tmp/csmae-bench-ingest")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--keep", action="store_true", help="keep model, archive, index and scene for a rerun")
    ap.add_argument("--add-only", action="store_true",
                    help="time only the add stage, old code (--compare SRC) vs new, --rounds times each")
    ap.add_argument("--compare", help="another checkout's src folder (the old code) for --add-only")
    ap.add_argument("--rounds", type=int, default=2)
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        return child(sys.argv[3:], Path(sys.argv[2]))
    args = ap.parse_args()
    from bench_tile import make_scene
    from synth_archive import write_archive

    print(f"uptime at start: {os.getloadavg()}", flush=True)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "GDAL_CACHEMAX": "512"}
    py = [sys.executable, "-m", "csmae"]
    facts: dict = {"items": args.items, "size": args.size}
    model = work / "model"
    if not (model / "model.safetensors").exists():
        make_model(model)
    emb = work / f"emb-{args.items}"
    if not (emb / "manifest.json").exists():
        shutil.rmtree(emb, ignore_errors=True)
        t = time.perf_counter()
        write_archive(emb, items=args.items, dim=96, model_dir=model)
        facts["archive_write_s"] = round(time.perf_counter() - t, 1)
    base = work / f"idx-{args.items}"
    if not (base / "manifest.json").exists():
        shutil.rmtree(base, ignore_errors=True)
        res, ru = run_child([*py, "index", str(emb), "--out", str(base)], env)
        if res.returncode:
            print(res.stderr, file=sys.stderr)
            return 1
        facts["csmae_index"] = {**ru, "out": res.stdout.strip()}
    if args.add_only:
        add_side_by_side(args, work, base, model)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    scene = work / "scene"
    if not (scene / "s1").exists():
        shutil.rmtree(scene, ignore_errors=True)
        t = time.perf_counter()
        make_scene(scene, args.size)
        facts["scene_write_s"] = round(time.perf_counter() - t, 1)
    for f in [*(scene / "s2").iterdir(), *(scene / "s1").iterdir()]:  # page cache warm, as bench_tile
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    ingest = [*py, "ingest", "--s2", str(scene / "s2"), "--s1", str(scene / "s1"), "--model", str(model),
              "--precision", "fp32", "--device", "cpu", "--batch-size", str(args.batch_size), "--json"]

    idx = linked_copy(base, work / "idx-run")
    timings = work / "timings.json"
    res, ru, samples = run_sampled([sys.executable, str(Path(__file__).resolve()), "child", str(timings),
                                    *ingest[3:], "--index", str(idx)], env)
    if res.returncode:
        print(res.stderr, file=sys.stderr)
        return 1
    out = json.loads(res.stdout)
    man = json.loads((idx / "manifest.json").read_text())
    intervals = json.loads(timings.read_text())
    parts: dict[str, float] = {}
    for label, t0, t1 in intervals:
        parts[label] = round(parts.get(label, 0.0) + t1 - t0, 2)
    facts["ingest"] = {**ru, "seconds": {k: round(v, 2) for k, v in out["seconds"].items()},
                       "patches": sum(r["patches"] for r in out["ingested"]), "count_after": man["count"],
                       "parts_s": parts, "memory_gb": stage_memory(samples, intervals)}
    facts["load_end"] = os.getloadavg()
    print(json.dumps(facts))
    s = facts["ingest"]["seconds"]
    print("\n| stage | seconds |\n|---|---:|")
    for k in ("plan", "checksum", "tile", "embed", "add"):
        print(f"| {k} | {s.get(k, 0):.1f} |")
    print(f"| whole command (wall) | {facts['ingest']['wall_s']:.1f} |")
    print(f"\npeak RSS {facts['ingest']['peak_rss_gb']} GB, CPU {facts['ingest']['cpu_s']} s, "
          f"{facts['ingest']['patches']:,} patches, index {args.items:,} -> "
          f"{facts['ingest']['count_after']:,}")
    for k, v in facts["ingest"]["parts_s"].items():
        print(f"| {k} | {v} |")
    print(f"memory per stage (GB): {facts['ingest']['memory_gb']}")
    print(f"uptime at end: {os.getloadavg()}")
    for name in ("idx-run", "idx-run.ingest-partial"):
        shutil.rmtree(work / name, ignore_errors=True)
    timings.unlink(missing_ok=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
