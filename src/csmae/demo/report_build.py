"""The demo report: evaluation numbers -> sentences, tables and figures (report.md + report.html).

Every sentence that states a result is formatted from the measured numbers; nothing is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from csmae.demo import evaluation as ev
from csmae.demo import figures as fg
from csmae.demo.recipe import MODELS

SERIES = {"csmae": "CSMAE (SESD)", "mae": "uni-modal MAEs (S1-only + S2-only)",
          "random": "chance (random descriptors)"}
METRIC_TITLES = {"precision": "P", "recall": "R", "f1": "F1", "f1_item": "F1_item", "map": "mAP",
                 "wmap": "wmAP"}


def _versions() -> dict[str, str]:
    from importlib import metadata

    out: dict[str, str] = {}
    for pkg in ("csmae", "torch", "lightning", "timm", "faiss-cpu", "numpy", "python"):
        if pkg == "python":
            import platform

            out[pkg] = platform.python_version()
            continue
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _f(x: float) -> str:
    return f"{x:.2f}"


def effect_sentences(eff: ev.Effect) -> list[str]:
    v, k = eff.values, eff.k
    cross = "; ".join(
        f"{fg.pretty(d)} mAP@{k} {_f(v['csmae'][d])} vs {_f(v['mae'][d])} for the uni-modal MAEs "
        f"(chance {_f(v['random'][d])}, CSMAE {eff.cross_gain[d]:+.2f})" for d in ev.CROSS)
    uni = "; ".join(
        f"{fg.pretty(d)} {_f(v['csmae'][d])} vs {_f(v['mae'][d])} ({eff.uni_diff[d]:+.2f})" for d in ev.UNI)
    verdict = ("The paper's main effect is shown at this budget" if eff.shown
               else "The paper's main effect is NOT shown at this budget")
    return [f"Cross-modal retrieval: {cross}.",
            f"Uni-modal retrieval (CSMAE vs the MAE of that sensor): {uni}.",
            f"{verdict} (rule: {eff.rule})."]


def _summary_table(results: dict[str, Any], k: int) -> tuple[list[str], list[list[str]]]:
    header = ["direction"] + [f"{m}@{k} {t}" for m in ("F1", "mAP") for t in ("CSMAE", "MAEs", "chance")]
    rows = []
    for d in ev.DIRECTIONS:
        row = [fg.pretty(d)]
        for m in ("f1", "map"):
            row += [f"{ev.metric(results[s], d, m, k):.3f}" for s in ("csmae", "mae", "random")]
        rows.append(row)
    return header, rows


def _full_table(res: Any, ks: list[int]) -> tuple[list[str], list[list[str]]]:
    header = ["direction"] + [f"{METRIC_TITLES[m]}@{k}" for k in ks for m in METRIC_TITLES]
    rows = []
    for d in ev.DIRECTIONS:
        rows.append([fg.pretty(d)] + [f"{ev.metric(res, d, m, k):.3f}" for k in ks for m in METRIC_TITLES])
    return header, rows


def _pick(n: int, m: int, rng: np.random.Generator) -> list[int]:
    return sorted(rng.choice(n, size=min(m, n), replace=False).tolist())


def _grids(ctx: Any, results: dict[str, Any], fig_dir: Path, previews: fg.Previews) -> list[tuple[Path, str]]:
    r = ctx.recipe
    rng = np.random.default_rng(ctx.seed)
    pick = {s: _pick(len(results["csmae"].queries[s]), r.grid_queries, rng) for s in ("s1", "s2")}
    out = []
    for d in ev.CROSS:
        qs = d.split("->")[0]
        rows = []
        for qi in pick[qs]:
            rows += fg.ranking_rows(results["csmae"], d, [qi], previews, k=r.grid_k, tag="CSMAE")
            rows += fg.ranking_rows(results["mae"], d, [qi], previews, k=r.grid_k, tag="MAEs")
        name = f"grid_{d.replace('->', '_to_')}.png"
        p = fg.grid(rows, fig_dir / name,
                    f"{fg.pretty(d)}: each query twice, CSMAE row then uni-modal MAEs row")
        out.append((p, f"{fg.pretty(d)} retrieval for {len(pick[qs])} validation queries: top-{r.grid_k} "
                       "of CSMAE (first row) and of the uni-modal MAEs (second row). Green frame: shares a "
                       "label with the query; red: shares none."))
    rows = []
    for s in ("s1", "s2"):
        rows += fg.ranking_rows(results["csmae"], f"{s}->mixed", pick[s], previews, k=r.grid_k, tag="CSMAE")
    p = fg.grid(rows, fig_dir / "grid_mixed.png",
                "CSMAE, sensor-agnostic: S1 and S2 queries, archive of both sensors")
    n_mixed = len(results["csmae"].archives["mixed"])
    out.append((p, "Sensor-agnostic search with CSMAE: S1 and S2 queries against the mixed test archive "
                   f"(both sensors, {n_mixed} items); the badge shows each hit's sensor."))
    return out


def _real_section(ctx: Any, rep: Any, fig_dir: Path, embs: dict[str, Any], real: dict[str, Any]) -> None:
    from csmae.data.store import StoreDataset
    from csmae.retrieval.grid import Tile

    n = real["pairs"]
    rep.heading("Real-sample pass (BigEarthNet pairs shipped with csmae)")
    pc, pm, ch = real["partner"]["csmae"], real["partner"]["mae"], real["chance"]
    rep.paragraph(
        f"The models above were trained on synthetic data only. Here the trained CSMAE embeds the {n} "
        f"real BigEarthNet pairs shipped with csmae (reBEN, v1 and encoded-LMDB samples; "
        f"CDLA-Permissive-1.0, Copernicus Sentinel data) and searches across sensors among them. "
        f"Co-registered partner found at rank 1: S1→S2 {pc['s1->s2']['top1']:.0%} of queries (uni-modal "
        f"MAEs {pm['s1->s2']['top1']:.0%}, chance {ch['top1']:.0%}); S2→S1 {pc['s2->s1']['top1']:.0%} "
        f"(MAEs {pm['s2->s1']['top1']:.0%}). Median partner rank S1→S2 "
        f"{pc['s1->s2']['median_rank']:.1f} (MAEs {pm['s1->s2']['median_rank']:.1f}, chance "
        f"{ch['median_rank']:.1f} of {n}). These numbers measure how far the synthetic training transfers to "
        f"real pixels; they are not BigEarthNet benchmark results.")
    header = ["model", "direction", "partner top-1", "partner top-5", "median rank", "MRR"]
    rows = []
    for name, title in (("csmae", "CSMAE"), ("mae", "uni-modal MAEs")):
        for d, v in real["partner"][name].items():
            rows.append([title, fg.pretty(d), f"{v['top1']:.2f}", f"{v['top5']:.2f}",
                         f"{v['median_rank']:.1f}", f"{v['mrr']:.3f}"])
    rows.append(["chance", "either", f"{ch['top1']:.2f}", f"{ch['top5']:.2f}", f"{ch['median_rank']:.1f}",
                 f"{ch['mrr']:.3f}"])
    rep.table(header, rows, caption=f"Finding a real patch's co-registered partner among the {n} real "
                                    "patches of the other sensor")
    lab = real["labels"]
    kk = sorted({int(k) for d in lab["csmae"].values() for k in d["map"]})
    if kk:
        k = kk[-1]
        rows = [[fg.pretty(d)] + [f"{ev.metric(lab[s], d, 'map', k):.3f}" for s in ("csmae", "mae")]
                for d in ("s1->s2", "s2->s1", "s1->s1", "s2->s2")]
        rep.table(["direction", f"CSMAE mAP@{k}", f"MAEs mAP@{k}"], rows,
                  caption="Label-based retrieval among the real pairs (every pair a query, the rest "
                          "the archive, own pair excluded)")
    # grid: S1 queries -> top-k real S2 with CSMAE
    ds = StoreDataset(ctx.path("data", "real"))
    previews = fg.Previews(ds)
    emb = embs["csmae"]
    ranks, scores, order = ev.partner_ranks(emb, "s1", "s2")
    q, a = emb.select(sensor="s1"), emb.select(sensor="s2")
    rng = np.random.default_rng(ctx.seed)
    names = q.label_names
    rows_g = []
    for qi in _pick(len(q), 4, rng):
        qt = Tile(previews.rgb(str(q.ids[qi]), "s1"), "s1", f"real query (partner #{ranks[qi]})",
                  [fg._short_labels(q.labels[qi], names)])
        tiles = []
        for rank, j in enumerate(order[qi][: ctx.recipe.grid_k], 1):
            ov = [names[c] for c in np.flatnonzero(q.labels[qi] & a.labels[j])]
            star = " partner" if a.ids[j] == q.ids[qi] else ""
            tiles.append(Tile(previews.rgb(str(a.ids[j]), "s2"), "s2", f"#{rank} {scores[qi, j]:.3f}{star}",
                              [f"shared {len(ov)}/{int(q.labels[qi].sum())}"], bool(ov)))
        rows_g.append((qt, tiles))
    p = fg.grid(rows_g, fig_dir / "real_s1_to_s2.png",
                "Real BigEarthNet S1 queries → real S2 patches (CSMAE, trained on synthetic data)")
    rep.figure(p, f"Real S1 queries and their top-{ctx.recipe.grid_k} real S2 patches by CSMAE "
                  "(trained on synthetic data only). 'partner' marks the query's co-registered S2 patch.")


def write_demo_report(ctx: Any) -> tuple[dict[str, Path], dict[str, Any]]:
    """Evaluate, draw and write ``OUT/report`` atomically; returns (paths, metrics dict)."""
    from csmae.data.store import StoreDataset
    from csmae.report import Report
    from csmae.retrieval.embeddings import load_embeddings

    r = ctx.recipe
    ks = sorted(r.ks)
    k = 10 if 10 in ks else ks[-1]
    embs = {m: load_embeddings(ctx.path("embeddings", m)) for m in MODELS}
    real_embs = {m: load_embeddings(ctx.path("embeddings", f"real-{m}")) for m in MODELS}
    results = ev.evaluate_all(embs, ks=ks, seed=ctx.seed)
    eff = ev.effect(results, k=k)
    real = ev.real_pass(real_embs, ks=ks)

    final = ctx.path("report")
    tmp = final.with_name(f"report.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    fig_dir = tmp / "figures"
    fig_dir.mkdir(parents=True)
    rep = Report("csmae demo: cross-sensor retrieval with CSMAE vs uni-modal MAEs")
    proto = results["csmae"].protocol
    rep.paragraph(
        f"Recipe '{r.name}', seed {ctx.seed}. A synthetic paired S1/S2 archive of {r.n_pairs} pairs "
        f"(split {'/'.join(str(x) for x in r.split_fractions)} train/val/test) trained three models of "
        f"the same size and budget (D={r.embed_dim}, {r.depth} encoder blocks per sensor, decoder "
        f"{r.decoder_depth} x {r.decoder_embed_dim}; {r.steps} steps of batch {r.batch_size}, AdamW lr "
        f"{r.lr:g}, mask ratio {r.mask_ratio}, {_training_precision(ctx)} on CPU): CSMAE (SESD, last "
        f"{r.shared_depth} "
        f"block(s) shared, UMR + CMR + MIM) and two uni-modal MAEs (S1 only, S2 only). Retrieval "
        f"protocol (method.md section 7): queries = validation split ({proto['n_queries']['s1']} pairs), "
        f"archive = test split ({proto['n_archive']['s1']} pairs), cosine similarity, exact search. For "
        f"the uni-modal baseline, S1 items are described by the S1-only MAE and S2 items by the S2-only "
        f"MAE.")
    rep.heading("Main result")
    for s in effect_sentences(eff):
        rep.paragraph(s)
    header, rows = _summary_table(results, k)
    rep.table(header, rows, caption=f"F1@{k} (reference definition) and mAP@{k}, every direction")
    bars = {METRIC_TITLES[m]: {s: {d: ev.metric(results[s], d, m, k) for d in ev.DIRECTIONS} for s in SERIES}
            for m in ("map", "f1")}
    p = fg.metric_bars(bars, dict(SERIES), ev.DIRECTIONS, fig_dir / "metrics_bars.png", k=k)
    rep.figure(p, f"mAP@{k} and F1@{k} by direction: CSMAE, the uni-modal MAEs and chance")
    rep.heading("Every metric", level=3)
    for s in ("csmae", "mae"):
        h, rr = _full_table(results[s], ks)
        rep.table(h, rr, caption=f"{SERIES[s]}: all metrics (P, R, F1, F1_item, mAP in [0, 1]; wmAP in "
                                 "shared-label units)")
    rep.heading("Retrieval examples")
    previews = fg.Previews(StoreDataset(ctx.path("data", "synthetic")))
    for p, cap in _grids(ctx, results, fig_dir, previews):
        rep.figure(p, cap)
    rep.heading("Reconstructions")
    val = StoreDataset(ctx.path("data", "synthetic"), split="val")
    p = fg.reconstructions(ctx.path("runs", "csmae", "model"), val, r.recon_samples, ctx.seed,
                           fig_dir / "recon_csmae.png")
    rep.figure(p, "CSMAE on validation pairs: input, masked input, reconstruction from the same sensor "
                  "(UMR) and from the other sensor (CMR), for both target sensors")
    titles = {m: t for m, (_, t) in MODELS.items()}
    p2 = fg.loss_curves({m: ctx.path("runs", m) for m in MODELS}, titles, fig_dir / "loss_curves.png")
    if p2 is not None:
        rep.figure(p2, "Training loss per step (each model's own objective, so levels are not comparable)")
    _real_section(ctx, rep, fig_dir, real_embs, real)
    from csmae.demo import places as pl

    change, change_details = pl.change_metrics(ctx)
    fused = pl.fused_metrics(ctx, k=k)
    pl.places_section(ctx, rep, fig_dir, change, change_details, fused)
    rep.heading("Search page")
    rep.paragraph(f"An exact FAISS index of the CSMAE descriptors of the synthetic validation and test pairs "
                  f"(both sensors) is in {ctx.path('index')}. Open the search page with:")
    rep.code(f"csmae serve {ctx.path('index')}")
    place = _place_example(ctx.path("index"))
    if place is not None:
        rep.paragraph("The page draws the query and the results as footprints on a map (no base map: the "
                      "page works offline). The footprints and acquisition dates of the synthetic archive "
                      "are synthetic too: plausible places (tiles near the centre of their country, on its "
                      "UTM grid; csmae.geo.synthetic), not real acquisitions. Search by place and export "
                      "GeoJSON:")
        rep.code(f"csmae search {ctx.path('index')} --at={place[0]:.5f},{place[1]:.5f} --sensor s2 "
                 "--target s1 --geojson hits.geojson")
    facts = _run_facts(ctx)
    rep.heading("Run facts")
    rep.table(["stage", "seconds", "details"], facts["stage_rows"],
              caption="Wall time per stage on this machine")
    rep.bullets([f"{k_}: {v}" for k_, v in facts["bullets"].items()])
    rep.heading("Data notice")
    rep.paragraph("The real samples are BigEarthNet data (CDLA-Permissive-1.0; contains modified Copernicus "
                  "Sentinel data 2017-2018), copied from the BigEarthNet authors' releases; see "
                  "csmae/demo/assets/NOTICE.md. The synthetic archive is made by csmae.data.synth.")
    metrics = _jsonable({
        "kind": "csmae-demo-metrics", "recipe": r.to_dict(), "seed": ctx.seed, "protocol": proto,
        "models": {s: results[s].metrics for s in SERIES}, "effect": eff.to_dict(), "real": real,
        "change": change, "fused": fused,
        "stages": ctx.state["stages"], "facts": facts["bullets"], "versions": _versions(),
    })
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    rep.write(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    paths = {"md": final / "report.md", "html": final / "report.html", "metrics": final / "metrics.json"}
    return paths, metrics


def _stage_details(st: dict[str, Any]) -> str:
    det = []
    if "samples_per_s" in st:
        det.append(f"{st['steps']} steps x batch {st['batch_size']}, {st['samples_per_s']} samples/s "
                   f"(fit alone {st['fit_seconds']} s)")
        if st.get("final_loss") is not None:
            det.append(f"final loss {st['final_loss']:.4f}")
    elif "pairs_per_s" in st:
        det.append(f"{st['pairs']} pairs, {st['pairs_per_s']} pairs/s")
    elif "pairs" in st:
        det.append(f"{st['pairs']} pairs")
    if "items" in st:
        det.append(f"{st['items']} items")
    if st.get("resumed"):
        det.append("done by an earlier run (resumed)")
    return "; ".join(det)


def _place_example(index_dir: Path) -> tuple[float, float] | None:
    """(lon, lat) inside the first S2 footprint of an index, or None when it has no footprints."""
    import pandas as pd
    import shapely

    items = pd.read_parquet(index_dir / "items.parquet")
    if "geometry" not in items.columns:
        return None
    for geom, sensor in zip(items["geometry"], items["sensor"], strict=True):
        if geom is not None and sensor == "s2":
            c = shapely.from_wkb(geom).centroid
            return float(c.x), float(c.y)
    return None


def _run_facts(ctx: Any) -> dict[str, Any]:
    rows = []
    total = 0.0
    for name, st in ctx.state["stages"].items():
        if name == "report":
            continue
        total += float(st.get("seconds", 0))
        rows.append([name, f"{float(st.get('seconds', 0)):.1f}", _stage_details(st)])
    rows.append(["all stages before the report", f"{total:.1f}", ""])
    load0 = ctx.facts.get("load_average_start") or []
    load1 = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    bullets = {
        "seed": ctx.seed,
        "recipe": ctx.recipe.name,
        "versions": ", ".join(f"{k} {x}" for k, x in _versions().items()),
        "CPU": f"{ctx.facts.get('cpu_count')} logical CPUs, torch threads {ctx.facts.get('torch_threads')}, "
               f"{ctx.facts.get('platform')}",
        "load average at start (1, 5, 15 min)": ", ".join(f"{x:.1f}" for x in load0),
        "load average at the report": ", ".join(f"{x:.1f}" for x in load1),
        "precision": _precision_bullet(ctx),
    }
    return {"stage_rows": rows, "bullets": bullets, "total_seconds": total}


def _training_precision(ctx: Any) -> str:
    """The Lightning precision the models trained in (the recipe's, ``auto`` resolved)."""
    chosen = ctx.facts.get("precision") or {}
    if ctx.recipe.precision != "auto" or not chosen:
        return str(ctx.recipe.precision)
    return "bf16-mixed" if chosen.get("used") == "bf16" else "32"


def _precision_bullet(ctx: Any) -> str:
    chosen = ctx.facts.get("precision") or {}
    used = chosen.get("used", "bf16")
    how = f"{ctx.recipe.precision}: {chosen.get('reason')}" if ctx.recipe.precision == "auto" else "recipe"
    what = "bfloat16 autocast" if used == "bf16" else "fp32"
    return (f"training {_training_precision(ctx)}, embedding and the exact search's candidate pass "
            f"{what} ({how})")
