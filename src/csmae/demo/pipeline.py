"""``run_demo``: archive -> three trained models -> embeddings -> index -> evaluation -> report.

Output folder::

    OUT/
      demo.json              kind "csmae-demo": options, recipe, per-stage status and timings
      data/synthetic/        synthetic paired archive (prepared store, layout "native")
      data/real/             the shipped real BigEarthNet pairs (prepared store)
      runs/{csmae,mae_s1,mae_s2}/   training runs (csmae fit run folders; model/ inside)
      embeddings/{csmae,mae_s1,mae_s2}/       val + test descriptors of the synthetic archive
      embeddings/real-{csmae,mae_s1,mae_s2}/  descriptors of the real pairs
      index/                 exact FAISS index of CSMAE over the synthetic val + test items (csmae serve)
      data/series/, embeddings/series/, index-series/   held-out places through time (csmae.demo.places)
      report/                report.md, report.html (self-contained), metrics.json, figures/

Stages whose output folder exists (each is written atomically) are skipped when the demo is run
again into the same folder with the same options, so an interrupted demo resumes.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from csmae.demo.recipe import MODELS, Recipe, get_recipe

log = logging.getLogger(__name__)
STATE = "demo.json"
KIND = "csmae-demo"


class Bar(Protocol):
    def update(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


#: progress(stage title, total or None, unit) -> a bar
ProgressFactory = Callable[[str, "int | None", str], Bar]


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _no_progress(title: str, total: int | None, unit: str) -> Bar:
    return _NoBar()


@dataclass
class DemoResult:
    """Where everything went, and the headline numbers."""

    out: Path
    report_md: Path
    report_html: Path
    metrics_json: Path
    index_dir: Path
    seconds: float
    effect: dict[str, Any]
    stages: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    out: Path
    recipe: Recipe
    seed: int
    progress: ProgressFactory
    state: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


def _options(recipe: Recipe, seed: int) -> dict[str, Any]:
    # JSON round trip: tuples become lists, as in the saved demo.json they are compared with
    return json.loads(json.dumps({"recipe": recipe.to_dict(), "seed": seed}))


def _load_state(out: Path, options: dict[str, Any], *, overwrite: bool) -> dict[str, Any]:
    path = out / STATE
    if path.is_file() and not overwrite:
        state = json.loads(path.read_text())
        if state.get("kind") == KIND and state.get("options") == options:
            return state
        raise FileExistsError(
            f"{out} holds a demo run with other options ({path}); choose another --out or pass --overwrite"
        )
    if out.exists() and any(out.iterdir()):
        if not path.is_file():  # never delete a folder the demo did not make
            raise FileExistsError(f"{out} exists, is not empty and is not a csmae demo folder; "
                                  "choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return {"kind": KIND, "options": options, "stages": {},
            "created": datetime.now(UTC).isoformat(timespec="seconds")}


def _save_state(ctx: Context) -> None:
    ctx.state["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
    path = ctx.out / STATE
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(ctx.state, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _stage(ctx: Context, name: str, output: Path, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``fn`` unless ``output`` exists from an earlier run of this stage; record its time."""
    done = ctx.state["stages"].get(name)
    if done and done.get("status") == "done" and output.exists():
        log.info("stage %s: already done (%s), skipped", name, output)
        done["resumed"] = True  # its timing is that of the earlier run
        return done
    t0 = time.perf_counter()
    info = fn()
    rec = {"status": "done", "seconds": round(time.perf_counter() - t0, 2), **info}
    ctx.state["stages"][name] = rec
    _save_state(ctx)
    return rec


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Keep Lightning's tips and small-data warnings out of the demo's output."""
    import lightning.pytorch  # noqa: F401  (its import sets its loggers' levels; set ours after it)

    names = ("lightning.pytorch", "lightning.fabric", "lightning")
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lvl in old.items():
            logging.getLogger(n).setLevel(lvl)


def demo_precision(recipe: Recipe) -> Any:
    """The demo's precision on this CPU (:class:`csmae.models.precision.PrecisionChoice`): the recipe's
    ``auto`` is bf16 where the CPU runs bf16 matmuls natively, fp32 elsewhere; training, embedding
    and the exact search's candidate pass all follow it."""
    from csmae.models.precision import choose_precision

    asked = {"auto": "auto", "bf16-mixed": "bf16", "bf16-true": "bf16"}.get(recipe.precision, "fp32")
    return choose_precision(asked, "cpu", what="demo precision")


def embed_precision(ctx: Context) -> str:
    """``bf16`` or ``fp32``: what the demo's embedding stages compute in."""
    return str((ctx.facts.get("precision") or {}).get("used", "fp32"))


# --------------------------------------------------------------------------------- stages
def stage_data(ctx: Context) -> None:
    from csmae.data.synth import write_synthetic
    from csmae.demo.real import write_real_store

    r = ctx.recipe
    syn = ctx.path("data", "synthetic")

    def synth() -> dict[str, Any]:
        bar = ctx.progress("synthetic archive", 1, "store")
        write_synthetic(syn, n=r.n_pairs, seed=ctx.seed, format="store", layout="native",
                        split_fractions=r.split_fractions, overwrite=True)
        bar.update(1)
        bar.close()
        return {"pairs": r.n_pairs}

    rec = _stage(ctx, "synthetic", syn, synth)
    ctx.facts["synthetic"] = rec

    def real() -> dict[str, Any]:
        bar = ctx.progress("real samples", 1, "store")
        write_real_store(ctx.path("data", "real"), overwrite=True)
        bar.update(1)
        bar.close()
        return {}

    ctx.facts["real"] = _stage(ctx, "real", ctx.path("data", "real"), real)


class _StepBar:
    """A Lightning callback advancing a progress bar per optimiser step."""

    def __new__(cls, bar: Bar) -> Any:
        import lightning.pytorch as pl

        class StepBar(pl.Callback):
            def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                                   batch_idx: int) -> None:
                bar.update(1)

        return StepBar()


def stage_train(ctx: Context, key: str) -> None:
    from csmae.data.store import StoreDataset
    from csmae.training.config import from_dict
    from csmae.training.run import fit

    r = ctx.recipe
    run_dir = ctx.path("runs", key)
    store = str(ctx.path("data", "synthetic"))

    def train() -> dict[str, Any]:
        if run_dir.exists():  # an interrupted run: start it over
            shutil.rmtree(run_dir)
        raw = r.fit_dict(key, store=store, seed=ctx.seed)
        n_train = len(StoreDataset(store, split="train"))
        raw["data"]["batch_size"] = min(r.batch_size, n_train)
        cfg = from_dict(raw, source=f"csmae demo ({key})")
        bar = ctx.progress(f"train {MODELS[key][1]}", r.steps, "step")
        try:
            with quiet_lightning():
                # no checkpoints: with both checkpoint options off, Lightning would still add its
                # default ModelCheckpoint (logs/checkpoints/*.ckpt); the demo keeps only model/
                res = fit(cfg, out=run_dir, callbacks=[_StepBar(bar)],
                          trainer_overrides={"enable_checkpointing": False})
        finally:
            bar.close()
        return {"steps": res.steps, "epochs": res.epochs, "samples_per_s": round(res.samples_per_s, 2),
                "fit_seconds": round(res.seconds, 2), "final_loss": res.final_loss,
                "batch_size": cfg.data.batch_size, "train_pairs": n_train}

    ctx.facts[f"train:{key}"] = _stage(ctx, f"train:{key}", run_dir / "model", train)


def stage_embed(ctx: Context, key: str, *, real: bool) -> None:
    from csmae.retrieval.embed import embed_dataset

    r = ctx.recipe
    name = f"real-{key}" if real else key
    out = ctx.path("embeddings", name)
    sensors = {"mae_s1": ["s1"], "mae_s2": ["s2"]}.get(key)
    src = ctx.path("data", "real" if real else "synthetic")

    def embed() -> dict[str, Any]:
        holder: dict[str, Any] = {}

        def on_progress(done: int, total: int) -> None:
            if "bar" not in holder:
                title = f"embed {'real ' if real else ''}{MODELS[key][1]}"
                holder["bar"] = ctx.progress(title, total, "pair")
            holder["bar"].update(done - holder.get("done", 0))
            holder["done"] = done

        t0 = time.perf_counter()
        embed_dataset(ctx.path("runs", key, "model"), [src], out, split=None if real else ["val", "test"],
                      sensors=sensors, batch_size=r.embed_batch, precision=embed_precision(ctx), device="cpu",
                      overwrite=True, on_progress=on_progress)
        if "bar" in holder:
            holder["bar"].close()
        n = int(holder.get("done", 0))
        return {"pairs": n, "pairs_per_s": round(n / max(1e-9, time.perf_counter() - t0), 1)}

    ctx.facts[f"embed:{name}"] = _stage(ctx, f"embed:{name}", out, embed)


def stage_index(ctx: Context) -> None:
    from csmae.retrieval.index import build_index

    out = ctx.path("index")

    def index() -> dict[str, Any]:
        si = build_index(ctx.path("embeddings", "csmae"), kind="exact", out=out, overwrite=True)
        return {"items": int(si.index.ntotal)}

    ctx.facts["index"] = _stage(ctx, "index", out, index)


# ----------------------------------------------------------------------------------- driver
def run_demo(out: str | os.PathLike[str] = "csmae-demo", *, quick: bool = False, seed: int = 0,
             n_pairs: int | None = None, progress: ProgressFactory | None = None,
             overwrite: bool = False) -> DemoResult:
    """Run the whole demo into ``out`` (see the module docstring) and return where the report is.

    Args:
        out: output folder (resumed when it holds an unfinished demo with the same options).
        quick: the ~1 minute smoke recipe instead of the full one.
        seed: seed of the archive, the training runs and every random choice of the report.
        n_pairs: synthetic archive size (default: the recipe's).
        progress: factory of progress bars ``(title, total, unit) -> bar``; default: none.
        overwrite: replace an existing ``out`` made with other options.
    """
    import torch

    from csmae.demo.report_build import write_demo_report

    t_start = time.perf_counter()
    recipe = get_recipe(quick, n_pairs)
    out = Path(out)
    state = _load_state(out, _options(recipe, seed), overwrite=overwrite)
    ctx = Context(out=out, recipe=recipe, seed=seed, progress=progress or _no_progress, state=state)
    ctx.facts["load_average_start"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    ctx.facts["torch_threads"] = torch.get_num_threads()
    ctx.facts["cpu_count"] = os.cpu_count()
    ctx.facts["platform"] = platform.platform()
    ctx.facts["precision"] = demo_precision(recipe).describe()
    stage_data(ctx)
    for key in MODELS:
        stage_train(ctx, key)
    for real in (False, True):
        for key in MODELS:
            stage_embed(ctx, key, real=real)
    stage_index(ctx)
    from csmae.demo.places import stage_series

    stage_series(ctx)
    t0 = time.perf_counter()
    bar = ctx.progress("evaluate + report", 1, "report")
    paths, metrics = write_demo_report(ctx)
    bar.update(1)
    bar.close()
    ctx.state["stages"]["report"] = {"status": "done", "seconds": round(time.perf_counter() - t0, 2)}
    ctx.state["status"] = "completed"
    ctx.state["seconds_this_run"] = round(time.perf_counter() - t_start, 2)
    _save_state(ctx)
    return DemoResult(out=out, report_md=paths["md"], report_html=paths["html"],
                      metrics_json=paths["metrics"], index_dir=ctx.path("index"),
                      seconds=time.perf_counter() - t_start,
                      effect=metrics["effect"], stages=ctx.state["stages"])
