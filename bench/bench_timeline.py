"""Timeline and change-detection latency over a synthetic archive of 1M-10M items, old code vs new.

    nice -n 5 flock /tmp/csmae-bigmem.lock .venv/bin/python bench/bench_timeline.py \\
        --items 1000000 --dim 96 --compare /tmp/csmae-old/src [--rounds 2] [--keep]
    .venv/bin/python bench/bench_timeline.py --items 20000 --queries 20 --rounds 1      # smoke

The archive (**synthetic**, bench/synth_archive.py): ``--items`` rows = places x 20 dates x 2
sensors on the UTM 33N place grid, random unit descriptors of ``--dim``, written as an embeddings
folder and made into an exact index by ``csmae index EMB --out IDX`` (timed, peak RSS). Periods:
dates 0-9 (before) and 10-19 (after). "One S2 tile" = the lon/lat box of T33UUP (bench_tile.py's
tile), which holds 8,281 places of the grid's cells plus the cells its lon/lat box adds at the edges.

Each measurement runs in a child process (``probe``), once per source tree and round, the trees
alternating (new, old, old, new, ...): ``--compare SRC`` is another checkout's ``src`` folder (e.g.
``git archive <commit> src | tar -x -C /tmp/csmae-old``). A probe loads the index the way a server
does (``Retriever.load``), then times ``Retriever.timeline`` by place (reference first, previous),
by point (lon/lat -> place) and with a date filter (median and p95 of ``--queries`` random places),
and ``csmae.retrieval.change_index.index_changes`` (what ``csmae changes`` calls) over the whole
archive and over the tile's box (pairings auto and s2->s1), and the change-like search in the tile;
with a digest of every answer, so old and new must agree. The parent also times the CLI end to end
(``csmae timeline IDX --place KEY --json``, ``csmae changes IDX --bbox ... --out x.parquet``), load
included, with the child's peak RSS.

A probe stops itself (exit 3) when the machine's MemAvailable falls under ``--min-free-gb``.
Prints Markdown table rows and one JSON line per probe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def mem_available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return float("inf")


def guard_memory(min_free_gb: float) -> None:
    """Exit (3) at once when the machine runs short of memory: never push others' work into OOM."""
    def watch() -> None:
        while True:
            if mem_available_gb() < min_free_gb:
                sys.stderr.write(f"probe: MemAvailable under {min_free_gb} GB, stopping\n")
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()


def timed(fn, args_list) -> tuple[float, float, float, list]:
    """(median ms, p95 ms, mean CPU ms, results) of fn(*a) for a in args_list."""
    ms, out = [], []
    c = time.process_time()
    for a in args_list:
        t = time.perf_counter()
        out.append(fn(*a))
        ms.append((time.perf_counter() - t) * 1000)
    cpu = (time.process_time() - c) * 1000 / max(1, len(ms))
    ms.sort()
    return statistics.median(ms), ms[int(0.95 * (len(ms) - 1))], cpu, out


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def probe(args: argparse.Namespace) -> None:
    """One source tree's measurements (run in a child with that tree on PYTHONPATH)."""
    sys.path.insert(0, str(BENCH))
    guard_memory(args.min_free_gb)
    from synth_archive import Layout, cells

    from csmae.retrieval.change import Period
    from csmae.retrieval.change_index import index_changes, index_similar_changes
    from csmae.retrieval.retriever import Retriever

    lay = Layout(items=args.items)
    before, after = Period.parse(lay.period(0, 9)), Period.parse(lay.period(10, 19))
    out: dict = {"src": args.src_name}
    t, c = time.perf_counter(), time.process_time()
    r = Retriever.load(args.index)
    out["load_s"] = round(time.perf_counter() - t, 2)
    out["load_cpu_s"] = round(time.process_time() - c, 2)
    out["rss_after_load_gb"] = round(peak_rss_gb(), 2)
    rng = np.random.default_rng(1)
    places = rng.integers(0, lay.places, args.queries)
    keys = [lay.key(int(p)) for p in places]
    _, centres = cells(lay, places)
    t = time.perf_counter()
    r.timeline(keys[0])
    out["first_timeline_ms"] = round((time.perf_counter() - t) * 1000, 1)

    def tl(*a, **kw) -> list:
        got = r.timeline(*a, **kw)
        return [(x.id, x.sensor, x.datetime, None if x.distance is None else round(x.distance, 6))
                for x in got.acquisitions]

    rows = {}
    for name, fn, arglist in (
        ("place, reference first", lambda k: tl(k), [(k,) for k in keys]),
        ("place, reference previous", lambda k: tl(k, reference="previous"), [(k,) for k in keys]),
        ("point (lon/lat -> place)", lambda x, y: tl(lon=float(x), lat=float(y)),
         [tuple(c) for c in centres]),
        ("place + date filter", lambda k: tl(k, where={"start": "2018-02-01", "end": "2018-03-31"}),
         [(k,) for k in keys]),
    ):
        med, p95, cpu, res = timed(fn, arglist)
        rows[name] = {"median_ms": round(med, 2), "p95_ms": round(p95, 2), "cpu_ms": round(cpu, 2),
                      "n": len(res[0]),
                      "digest": digest(res)}
    out["timeline"] = rows
    ch = {}
    box = {"bbox": tile_box(lay)}
    for name, kw in (("whole archive, auto", {}), ("tile, auto", {"where": box}),
                     ("tile, auto (filter cached)", {"where": box}),
                     ("tile, s2->s1", {"where": box, "pairing": "s2->s1"})):
        t, c = time.perf_counter(), time.process_time()
        res = index_changes(r.index, before=before, after=after, **kw)
        s = time.perf_counter() - t
        ch[name] = {"s": round(s, 2), "cpu_s": round(time.process_time() - c, 2), "places": len(res),
                    "digest": digest([res.places.tolist(), np.round(res.score, 9).tolist(),
                                      res.pairing.tolist(), res.n_before.tolist(), res.n_after.tolist()])}
    t, c = time.perf_counter(), time.process_time()
    like = index_similar_changes(r.index, place=lay.key(int(places[0])), before=before, after=after,
                                 pairing="s2->s2", where=box)
    sims = [(x["place"], round(x["similarity"], 9)) for x in like]
    ch["change-like search, tile"] = {"s": round(time.perf_counter() - t, 2), "places": len(like),
                                      "cpu_s": round(time.process_time() - c, 2),
                                      "digest": digest(sims)}
    out["changes"] = ch
    out["peak_rss_gb"] = round(peak_rss_gb(), 2)
    print(json.dumps(out))


def tile_box(lay) -> tuple[float, float, float, float]:
    """The lon/lat box of the S2 tile T33UUP when the archive covers it; else (a small archive: a
    smoke run) the box of the archive's first rows of places."""
    from synth_archive import cells, tile_bbox, tile_places

    if tile_places(lay):
        return tile_bbox()
    wkb, _ = cells(lay, np.arange(min(lay.places, 3 * lay.side)))
    import shapely

    b = shapely.bounds(shapely.from_wkb(wkb))
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[int, str, str, dict]:
    """(rc, stdout, stderr, wall s / CPU s / peak RSS GB of the child)."""
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=fo, stderr=fe, text=True)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        fo.seek(0)
        fe.seek(0)
        return (os.waitstatus_to_exitcode(status), fo.read(), fe.read(),
                {"wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
                 "peak_rss_gb": round(ru.ru_maxrss * 1024 / 1e9, 2)})


def build(args: argparse.Namespace, work: Path, env: dict[str, str]) -> Path:
    sys.path.insert(0, str(BENCH))
    from synth_archive import write_archive, write_index

    emb, idx = work / f"emb-{args.items}-d{args.dim}", work / f"idx-{args.items}-d{args.dim}"
    if args.writer == "direct":
        if not (idx / "manifest.json").exists():
            check_writer(work, env)
            shutil.rmtree(idx, ignore_errors=True)
            t = time.perf_counter()
            write_index(idx, items=args.items, dim=args.dim)
            print(f"wrote the index directly in {time.perf_counter() - t:.0f} s, peak RSS of this process "
                  f"{peak_rss_gb():.2f} GB", flush=True)
        return idx
    if not (emb / "manifest.json").exists():
        shutil.rmtree(emb, ignore_errors=True)
        t = time.perf_counter()
        write_archive(emb, items=args.items, dim=args.dim)
        print(f"wrote the synthetic embeddings in {time.perf_counter() - t:.0f} s", flush=True)
    if not (idx / "manifest.json").exists():
        shutil.rmtree(idx, ignore_errors=True)
        rc, so, se, ru = run_child([sys.executable, "-m", "csmae", "index", str(emb), "--out", str(idx)], env)
        if rc:
            raise SystemExit(se)
        print(f"csmae index: {so.strip()} ({ru})", flush=True)
    return idx


def check_writer(work: Path, env: dict[str, str]) -> None:
    """``write_index`` gives the index ``csmae index`` builds from ``write_archive``'s folder (30k rows,
    8 shards): the same items table, vectors and manifest facts; else stop."""
    import pandas as pd
    from synth_archive import write_archive, write_index

    from csmae.retrieval.index import SearchIndex

    w = work / "writer-check"
    shutil.rmtree(w, ignore_errors=True)
    write_archive(w / "emb", items=30_000, dim=16, shard_rows=4_000)
    cmd = [sys.executable, "-m", "csmae", "index", str(w / "emb"), "--out", str(w / "a")]
    rc, _, se, _ = run_child(cmd, env)
    if rc:
        raise SystemExit(se)
    write_index(w / "b", items=30_000, dim=16, shard_rows=4_000)
    a, b = SearchIndex.load(w / "a"), SearchIndex.load(w / "b")
    pd.testing.assert_frame_equal(a.items.drop(columns="labels"), b.items.drop(columns="labels"))
    assert (np.stack(a.items["labels"]) == np.stack(b.items["labels"])).all()
    rows = np.arange(len(a.items))
    assert np.array_equal(a.backend.reconstruct(rows), b.backend.reconstruct(rows))
    for k in ("count", "rows", "sensor_counts", "sensor_ranges", "dim", "label_names", "sensors", "factory"):
        assert a.manifest.get(k) == b.manifest.get(k), k
    shutil.rmtree(w)
    print("write_index == csmae index on a 30k-row archive (items, vectors, manifest facts)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="run", choices=["run", "probe"])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2, help="probes per source tree (alternating)")
    ap.add_argument("--compare", help="another checkout's src folder to run side by side (the old code)")
    ap.add_argument("--workdir", default="/tmp/csmae-bench-timeline")
    ap.add_argument("--min-free-gb", type=float, default=2.0, help="a probe stops when the machine has less")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI end-to-end timings")
    ap.add_argument("--writer", choices=["cli", "direct"], default="cli",
                    help="cli: csmae index of an embeddings folder; direct: synth_archive.write_index (the "
                         "same index, checked first on 30k rows; for archives csmae index cannot hold)")
    ap.add_argument("--keep", action="store_true", help="keep the archive and index for a rerun")
    ap.add_argument("--index", help=argparse.SUPPRESS)
    ap.add_argument("--src-name", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode == "probe":
        probe(args)
        return 0
    print(f"load average at start: {os.getloadavg()}; MemAvailable {mem_available_gb():.1f} GB", flush=True)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    trees = {"new": str(REPO / "src")}
    if args.compare:
        trees["old"] = str(Path(args.compare).resolve())
    envs = {k: {**os.environ, "PYTHONPATH": v} for k, v in trees.items()}
    idx = build(args, work, envs["new"])
    from synth_archive import Layout

    lay = Layout(items=args.items)
    results: dict[str, list[dict]] = {k: [] for k in trees}
    order = list(trees)
    for rnd in range(args.rounds):
        for name in order if rnd % 2 == 0 else order[::-1]:
            cmd = [sys.executable, str(Path(__file__).resolve()), "probe", "--index", str(idx), "--items",
                   str(args.items), "--queries", str(args.queries), "--src-name", name,
                   "--min-free-gb", str(args.min_free_gb)]
            rc, so, se, ru = run_child(cmd, envs[name])
            if rc:
                print(f"probe {name} failed (rc {rc}): {se[-2000:]}", flush=True)
                continue
            res = json.loads(so.strip().splitlines()[-1])
            res["child"] = ru
            res["load_avg"] = os.getloadavg()
            results[name].append(res)
            print(json.dumps(res), flush=True)
        if args.no_cli:
            continue
        box = [f"{v:.6f}" for v in tile_box(lay)]
        for name in order if rnd % 2 == 0 else order[::-1]:
            for what, cmd in (
                ("csmae timeline --place --json", ["timeline", str(idx), "--place", lay.key(123), "--json"]),
                ("csmae changes --bbox (tile) --out x.parquet",
                 ["changes", str(idx), "--before", lay.period(0, 9), "--after", lay.period(10, 19), "--bbox",
                  *box, "--out", str(work / f"changes-{name}.parquet")]),
            ):
                rc, so, se, ru = run_child([sys.executable, "-m", "csmae", *cmd], envs[name])
                rec = {"src": name, "cli": what, "rc": rc, **ru, "load_avg": os.getloadavg()}
                print(json.dumps(rec), flush=True)
                results[name].append(rec)
    print(f"\nload average at end: {os.getloadavg()}")
    summarize(results, args)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def summarize(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    """Markdown: medians over the rounds, old vs new and their ratio; digests compared."""
    def med(vals: list[float]) -> float:
        return statistics.median(vals) if vals else float("nan")

    probes = {k: [r for r in v if "timeline" in r] for k, v in results.items()}
    names = list(probes)
    head = " | ".join(names)
    print(f"\n| measurement ({args.items:,} synthetic items, D={args.dim}) | {head} | "
          + ("old / new |" if "old" in names else ""))
    print("|---|" + "---:|" * (len(names) + ("old" in names)))

    def row(label: str, get) -> None:
        vals = {k: med([get(p) for p in probes[k]]) for k in names}
        ratio = f" {vals['old'] / vals['new']:.1f}x |" if "old" in names and vals["new"] > 0 else ""
        print(f"| {label} | " + " | ".join(f"{vals[k]:.2f}" for k in names) + f" |{ratio}")

    row("Retriever.load, s", lambda p: p["load_s"])
    row("Retriever.load, CPU s", lambda p: p["load_cpu_s"])
    row("first timeline (groups rows by place), ms", lambda p: p["first_timeline_ms"])
    for q in probes[names[0]][0]["timeline"] if probes[names[0]] else []:
        row(f"timeline {q}, median ms", lambda p, q=q: p["timeline"][q]["median_ms"])
        row(f"timeline {q}, p95 ms", lambda p, q=q: p["timeline"][q]["p95_ms"])
        row(f"timeline {q}, CPU ms per query", lambda p, q=q: p["timeline"][q]["cpu_ms"])
    for c in probes[names[0]][0]["changes"] if probes[names[0]] else []:
        row(f"changes: {c}, s", lambda p, c=c: p["changes"][c]["s"])
        row(f"changes: {c}, CPU s", lambda p, c=c: p["changes"][c]["cpu_s"])
    row("probe peak RSS, GB", lambda p: p["peak_rss_gb"])
    for what in ("csmae timeline --place --json", "csmae changes --bbox (tile) --out x.parquet"):
        vals = {k: [r["wall_s"] for r in results[k] if r.get("cli") == what and r["rc"] == 0] for k in names}
        cpus = {k: [r["cpu_s"] for r in results[k] if r.get("cli") == what and r["rc"] == 0] for k in names}
        if all(vals.values()):
            rss = {k: max(r["peak_rss_gb"] for r in results[k] if r.get("cli") == what) for k in names}
            ratio = f" {med(vals['old']) / med(vals['new']):.1f}x |" if "old" in names else ""
            print(f"| CLI {what}, wall s (peak RSS GB) | "
                  + " | ".join(f"{med(vals[k]):.1f} ({rss[k]:.2f})" for k in names) + f" |{ratio}")
            ratio = f" {med(cpus['old']) / med(cpus['new']):.1f}x |" if "old" in names else ""
            print(f"| CLI {what}, CPU s | " + " | ".join(f"{med(cpus[k]):.1f}" for k in names) + f" |{ratio}")
    if "old" in names and probes["old"] and probes["new"]:
        a, b = probes["old"][0], probes["new"][0]
        same = {q: a["timeline"][q]["digest"] == b["timeline"][q]["digest"] for q in a["timeline"]}
        same |= {c: a["changes"][c]["digest"] == b["changes"][c]["digest"] for c in a["changes"]}
        print(f"\nanswers identical old vs new (digests): {same}")
        places = {c: b["changes"][c]["places"] for c in b["changes"]}
        print(f"places scored: {places}")


if __name__ == "__main__":
    raise SystemExit(main())
