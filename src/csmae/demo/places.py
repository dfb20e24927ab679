"""The demo's places-through-time part: a series archive of held-out places, change detection, fused queries.

Stages (after the main index)::

    OUT/data/series/          synthetic places at 6 dates (3 in spring, 3 in late summer), seasons,
                              clouds on S2, known change events (csmae.data.synth_time), own seed stream
    OUT/embeddings/series/    CSMAE descriptors of every acquisition (both sensors)
    OUT/index-series/         exact index of them: csmae changes OUT/index-series --before ... --after ...

Evaluation (:func:`change_metrics`, :func:`fused_metrics`): change detection between the two
periods on those places, by descriptor distance (S2->S2, S1->S1, S2->S1) and by the
pixel-difference baseline (S2->S2, S1->S1, on 30 m block means of the normalised images), as ROC
AUC and precision@k (k = the number of changed places scored); S2 images under clouds are left out
by their cloud mask (as an L2A scene classification gives it), S1 never. And fused S1+S2 queries
against single-sensor ones on the main archive (mAP@10).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

#: the series seed is derived from the demo seed, on its own stream: held-out places
SERIES_SEED_OFFSET = 1_000_003
BEFORE = "2018-04-01/2018-06-05"
AFTER = "2018-07-26/2018-10-01"
DESCRIPTOR_PAIRINGS = ("s2->s2", "s1->s1", "s2->s1")
PIXEL_SENSORS = ("s2", "s1")
#: the pixel baseline compares 3x3 block means (30 m): cheaper, and less speckle than 10 m pixels
PIXEL_BLOCK = 3


def stage_series(ctx: Any) -> None:
    """Write, embed and index the series archive (each a resumable demo stage)."""
    from csmae.data.synth import write_synthetic
    from csmae.data.synth_time import Series
    from csmae.demo.pipeline import _stage, embed_precision
    from csmae.retrieval.embed import embed_dataset
    from csmae.retrieval.index import build_index

    r = ctx.recipe
    store, emb_dir = ctx.path("data", "series"), ctx.path("embeddings", "series")
    idx_dir = ctx.path("index-series")

    def series() -> dict[str, Any]:
        bar = ctx.progress("places through time", 1, "store")
        write_synthetic(store, n=r.series_places, seed=ctx.seed + SERIES_SEED_OFFSET, format="store",
                        layout="native", series=Series(), overwrite=True)
        bar.update(1)
        bar.close()
        return {"places": r.series_places, "pairs": r.series_places * len(Series().dates)}

    ctx.facts["series"] = _stage(ctx, "series", store, series)

    def embed() -> dict[str, Any]:
        import time

        t0 = time.perf_counter()
        holder: dict[str, int] = {}
        embed_dataset(ctx.path("runs", "csmae", "model"), [store], emb_dir, split=None,
                      batch_size=r.embed_batch, precision=embed_precision(ctx), device="cpu", overwrite=True,
                      on_progress=lambda done, total: holder.update(done=done))
        n = int(holder.get("done", 0))
        return {"pairs": n, "pairs_per_s": round(n / max(1e-9, time.perf_counter() - t0), 1)}

    ctx.facts["embed:series"] = _stage(ctx, "embed:series", emb_dir, embed)

    def index() -> dict[str, Any]:
        si = build_index(emb_dir, kind="exact", out=idx_dir, overwrite=True)
        return {"items": int(si.index.ntotal)}

    ctx.facts["index-series"] = _stage(ctx, "index-series", idx_dir, index)


def _truth(store: Any) -> dict[str, Any]:
    manifest = json.loads((store / "manifest.json").read_text())
    return manifest["source"]["synthetic_series"]


def change_metrics(ctx: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics.json "change" section, details for the report: scores, truth)."""
    from csmae.data.store import StoreDataset
    from csmae.retrieval.change import Period, change_scores, pixel_change_scores, precision_at_k, roc_auc
    from csmae.retrieval.embeddings import load_embeddings

    store = ctx.path("data", "series")
    truth = _truth(store)
    changed = {p["place"] for p in truth["places"] if p["changed"]}
    cloudy = set(truth["cloud_s2"])
    before, after = Period.parse(BEFORE), Period.parse(AFTER)
    emb = load_embeddings(ctx.path("embeddings", "series"))
    meta = emb.meta
    places, sensors = meta["place"].to_numpy(dtype=object), emb.sensors
    times = meta["datetime"].dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    clear = ~((sensors == "s2") & np.isin(emb.ids.astype(str), list(cloudy)))
    auc: dict[str, float] = {}
    pak: dict[str, float] = {}
    ks: dict[str, int] = {}
    scored: dict[str, Any] = {}

    def score(name: str, keys: np.ndarray, values: np.ndarray) -> None:
        y = np.isin(keys.astype(str), list(changed))
        auc[name] = roc_auc(values, y)
        ks[name] = int(y.sum())
        pak[name] = precision_at_k(values, y, ks[name])
        scored[name] = (keys, values, y)

    for pr in DESCRIPTOR_PAIRINGS:
        res = change_scores(places, sensors, times, emb.vectors, before=before, after=after, pairing=pr,
                            valid=clear)
        score(pr, res.places, res.score)
    ds = StoreDataset(store)
    pos = {pid: i for i, pid in enumerate(ds.ids)}
    for s in PIXEL_SENSORS:
        rows = np.flatnonzero(sensors == s)
        images = _pixels(ds, s, [pos[str(i)] for i in emb.ids[rows]])
        keys, values = pixel_change_scores(places[rows], sensors[rows], times[rows], images, before=before,
                                           after=after, sensor=s, valid=clear[rows])
        score(f"pixel {s}->{s}", keys, values)
    section = {
        "auc": auc, "precision_at_k": pak, "k": ks,
        "places": len(truth["places"]), "changed": len(changed), "cloudy_s2_images": len(cloudy),
        "before": BEFORE, "after": AFTER, "dates": truth["series"]["dates"],
        "score": "cosine distance of the period-mean descriptors; pixel: mean |after - before| of the "
                 f"period-mean normalised images ({PIXEL_BLOCK}x{PIXEL_BLOCK} block means, "
                 f"{10 * PIXEL_BLOCK} m)",
    }
    return section, {"scored": scored, "truth": truth}


def _pixels(ds: Any, sensor: str, rows: list[int], *, block: int = PIXEL_BLOCK, chunk: int = 128
            ) -> np.ndarray:
    """(N, C, 120/block, 120/block) normalised images of ``sensor`` (block means), read in chunks."""
    from csmae.data.synth_scene import block_mean

    out = []
    for lo in range(0, len(rows), chunk):
        x = ds.sensors[sensor].normalize(ds.get_batch(rows[lo:lo + chunk])[sensor])  # (B, C, 120, 120)
        out.append(np.stack([block_mean(img, block) for img in x]).astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 1, 1, 1), np.float32)


def fused_metrics(ctx: Any, k: int = 10) -> dict[str, Any]:
    """metrics.json "fused": mAP@k of S1, S2 and S1+S2 queries (validation pairs, mixed test archive)."""
    from csmae.retrieval.embeddings import load_embeddings
    from csmae.retrieval.fusion import FUSED, fused_query_map

    res = fused_query_map(load_embeddings(ctx.path("embeddings", "csmae")), k=k)
    return {f"map@{k}": {s: res[s] for s in ("s1", "s2", FUSED)}, "queries": res["queries"],
            "archive": res["archive"],
            "archive_is": "test split, both sensors (mixed)",
            "fusion": "mean of the two L2-normalised descriptors, renormalised (csmae.retrieval.fusion)"}


def fused_sentence(fused: dict[str, Any], k: int = 10) -> str:
    v = fused[f"map@{k}"]
    f, s1, s2 = v["s1+s2"], v["s1"], v["s2"]
    if f > max(s1, s2):
        verdict = "beats either sensor alone"
    elif f > min(s1, s2):
        verdict = f"beats {'S1' if s1 < s2 else 'S2'} alone but not {'S2' if s1 < s2 else 'S1'}"
    else:
        verdict = "does not beat either sensor alone"
    return (f"Fused S1+S2 queries (the same {fused['queries']} validation places, mixed test archive of "
            f"{fused['archive']} items): mAP@{k} {f:.3f} vs S1 alone {s1:.3f} and S2 alone {s2:.3f}: the "
            f"fusion {verdict} here.")


def change_sentences(change: dict[str, Any]) -> list[str]:
    a, p, k = change["auc"], change["precision_at_k"], change["k"]
    return [
        f"Change detection on {change['places']} held-out places ({change['changed']} with a known "
        f"land-cover change between the periods {change['before']} and {change['after']}; "
        f"{change['cloudy_s2_images']} S2 images under clouds left out by their cloud mask): ROC AUC of the "
        f"CSMAE descriptor distance S2→S2 {a['s2->s2']:.3f}, S1→S1 {a['s1->s1']:.3f}, cross-sensor S2 "
        f"before → S1 after {a['s2->s1']:.3f}; pixel difference S2→S2 {a['pixel s2->s2']:.3f}, S1→S1 "
        f"{a['pixel s1->s1']:.3f} (pixels cannot compare S2 with S1 at all).",
        "Precision@k (k = the number of changed places scored): " + ", ".join(
            f"{name} {p[name]:.2f} (k={k[name]})" for name in p) + ".",
    ]


def places_section(ctx: Any, rep: Any, fig_dir: Any, change: dict[str, Any], details: dict[str, Any],
                   fused: dict[str, Any]) -> None:
    """The report's section on places through time (sentences, table, change map)."""
    rep.heading("Places through time: change detection and fused queries")
    for s in change_sentences(change):
        rep.paragraph(s)
    names = list(change["auc"])
    rep.table(["method", "ROC AUC", "precision@k", "k"],
              [[n, f"{change['auc'][n]:.3f}", f"{change['precision_at_k'][n]:.3f}", str(change["k"][n])]
               for n in names],
              caption="Change detection between the two periods: CSMAE descriptors vs pixel difference")
    p = change_map(details, fig_dir / "change_map.png")
    rep.figure(p, "Held-out places ranked by CSMAE S2→S1 change score (S2 before, S1 after): colour = "
                  "score, ringed = a known change. Coordinates: the synthetic places' lon/lat.")
    rep.paragraph(fused_sentence(fused))
    rep.paragraph("Run change detection on the series index yourself:")
    rep.code(f"csmae changes {ctx.path('index-series')} --before {BEFORE} --after {AFTER} "
             "--pairing s2:s1 --geojson changes.geojson")


def change_map(details: dict[str, Any], out: Any) -> Any:
    """Scatter of place centres coloured by the S2->S1 change score, known changes ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from csmae.geo.place import place_polygon

    keys, values, y = details["scored"]["s2->s1"]
    cells = [place_polygon(str(k)).centroid for k in keys]
    lon, lat = np.array([c.x for c in cells]), np.array([c.y for c in cells])
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    sc = ax.scatter(lon, lat, c=values, cmap="magma", s=18)
    ax.scatter(lon[y], lat[y], facecolors="none", edgecolors="tab:cyan", s=70, linewidths=1.2,
               label="known change")
    fig.colorbar(sc, ax=ax, label="change score (cosine distance)")
    ax.set_xlabel("lon")
    ax.set_ylabel("lat")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("Detected changes (CSMAE, S2 before → S1 after)")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
