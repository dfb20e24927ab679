"""Run the whole system on a synthetic paired archive plus the real BigEarthNet samples csmae ships,
and write a report (report.md + a self-contained report.html).

Trains CSMAE (SESD) and two uni-modal MAEs (S1 only, S2 only) at the same size and budget on CPU
(bf16 autocast where the CPU runs bf16 natively, AVX512-BF16 or AMX; fp32 elsewhere), embeds and
indexes the archive, evaluates every retrieval direction and prints where the report is and how to
open the search page.

Examples:
  csmae demo                         # a few minutes on 2 CPU cores, into ./csmae-demo
  csmae demo --quick --out /tmp/d    # ~1 minute smoke run
  csmae demo --n-pairs 4000 --seed 1

Running it again into the same --out resumes: finished stages are skipped.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="csmae-demo", help="output folder (default ./csmae-demo)")
    p.add_argument("--quick", action="store_true", help="a ~1 minute smoke version (tiny archive and models)")
    p.add_argument("--seed", type=int, default=0, help="seed of the archive, training and report (default 0)")
    p.add_argument("--n-pairs", type=int, default=None, metavar="N",
                   help="synthetic archive size (default 2000; 240 with --quick)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it holds a demo made with other options")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _tqdm_factory(disable: bool) -> Any:
    from tqdm.auto import tqdm

    def make(title: str, total: int | None, unit: str) -> Any:
        return tqdm(total=total, desc=f"{title:<32}", unit=unit, disable=disable, leave=True,
                    dynamic_ncols=True)

    return make


def run(args: argparse.Namespace) -> int:
    import logging
    import time
    from pathlib import Path

    from csmae.demo import run_demo

    if not args.verbose:  # library INFO lines would break the progress bars
        logging.getLogger().setLevel(logging.WARNING)
    from csmae.demo.pipeline import demo_precision
    from csmae.demo.recipe import get_recipe

    print(demo_precision(get_recipe(args.quick, args.n_pairs)).line("precision"))
    t0 = time.perf_counter()
    res = run_demo(args.out, quick=args.quick, seed=args.seed, n_pairs=args.n_pairs,
                   progress=_tqdm_factory(args.no_progress), overwrite=args.overwrite)
    eff = res.effect
    v, k = eff["values"], eff["k"]
    print()
    for d in ("s1->s2", "s2->s1"):
        print(f"  {d.upper():8s} mAP@{k}: CSMAE {v['csmae'][d]:.3f}  uni-modal MAEs {v['mae'][d]:.3f}  "
              f"chance {v['random'][d]:.3f}")
    for d in ("s1->s1", "s2->s2"):
        print(f"  {d.upper():8s} mAP@{k}: CSMAE {v['csmae'][d]:.3f}  uni-modal MAE  {v['mae'][d]:.3f}")
    print(f"  main effect {'shown' if eff['shown'] else 'NOT shown'} ({eff['rule']})")
    print(f"\ndone in {time.perf_counter() - t0:.0f} s.")
    print(f"report:  {Path(res.report_html).resolve()}   (open it in a browser; Markdown: {res.report_md})")
    print(f"metrics: {res.metrics_json}")
    print(f"search page: csmae serve {Path(res.index_dir).resolve()}   then open http://127.0.0.1:8000/")
    return 0
