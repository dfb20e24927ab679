"""``csmae demo``: the whole system on a synthetic archive plus the shipped real samples, with a report.

Public API::

    run_demo(out="csmae-demo", *, quick=False, seed=0, n_pairs=None, progress=None,
             overwrite=False) -> DemoResult
    get_recipe(quick, n_pairs=None) -> Recipe;  FULL, QUICK
    write_real_store(out) -> Path   (the shipped real BigEarthNet pairs as a prepared store)
"""

from __future__ import annotations

from csmae.demo.pipeline import DemoResult, run_demo
from csmae.demo.real import write_real_store
from csmae.demo.recipe import FULL, QUICK, Recipe, get_recipe

__all__ = ["FULL", "QUICK", "DemoResult", "Recipe", "get_recipe", "run_demo", "write_real_store"]
