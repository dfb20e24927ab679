"""Evaluation report: metrics.json, metrics.md (Markdown tables), plots and retrieval grids."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from csmae.atomic import atomic_path
from csmae.retrieval.grid import Tile, draw_grid, overlap_lines
from csmae.retrieval.metrics import METRICS

log = logging.getLogger(__name__)

METRIC_TITLES = {
    "precision": "P",
    "recall": "R",
    "f1": "F1",
    "f1_item": "F1_item",
    "map": "mAP",
    "wmap": "wmAP",
}
#: metrics shown in percent; wmAP is in label-count units (ACG averages |Lq & Lr|), shown as is.
#: the manifest kind of an evaluation report folder
REPORT_KIND = "csmae-evaluation"
PERCENT = ("precision", "recall", "f1", "f1_item", "map")


def pretty_direction(name: str) -> str:
    q, a = name.split("->")
    return f"{q.upper()} → {a.upper() if a != 'mixed' else 'mixed'}"


def metrics_markdown(result: dict[str, Any]) -> str:
    """One table per k: rows = directions, columns = metrics (percent)."""
    dirs = result["directions"]
    proto = result["protocol"]
    ks = sorted({int(k) for d in dirs.values() for k in d["precision"]})
    lines = [
        "# Retrieval evaluation",
        "",
        f"Queries: split `{proto['query_split']}` ({_fmt_counts(proto['n_queries'])}); archive: split "
        f"`{proto['archive_split']}` ({_fmt_counts(proto['n_archive'])}). {proto['ranking']}."
        + (" Query's own item excluded." if proto.get("exclude_self") else "")
        + (" Own co-registered pair excluded." if proto.get("exclude_own_pair") else ""),
        "",
        "Metrics (method.md section 7): P, R = mean per-item precision/recall; F1 = harmonic "
        "mean of averaged P and R (reference definition); F1_item = mean per-item F1; mAP (these in "
        "percent); wmAP = mAP weighted by ACG, in shared-label units (can exceed 1).",
    ]
    model = proto.get("model") or {}
    if model.get("per_sensor"):
        lines += ["", "Models (cross-model pairs: each sensor's items described by its own model):", ""]
        for s, m in model["per_sensor"].items():
            lines.append(f"- {s.upper()}: {_model_line(m)}, from `{m.get('embeddings')}`")
    elif model:
        lines += ["", f"Model: {_model_line(model)}"]
    prec = proto.get("embedding_precision")
    if prec:
        shown = ", ".join(f"{s.upper()} {p}" for s, p in prec.items()) if isinstance(prec, dict) else prec
        lines += ["", f"Descriptors computed in {shown}."]
    for k in ks:
        lines += [
            "",
            f"## k = {k}",
            "",
            "| direction | " + " | ".join(METRIC_TITLES[m] for m in METRICS) + " |",
            "|---|" + "---:|" * len(METRICS),
        ]
        for name, d in dirs.items():
            if k not in d["precision"] and str(k) not in d["precision"]:
                continue
            vals = [_get(d[m], k) for m in METRICS]
            cells = [f"{100 * v:.2f}" if m in PERCENT else f"{v:.3f}" for m, v in zip(METRICS, vals)]
            lines.append(f"| {pretty_direction(name)} | " + " | ".join(cells) + " |")
    if proto.get("notes"):
        lines += ["", "Notes:", *[f"- {n}" for n in proto["notes"]]]
    return "\n".join(lines) + "\n"


def _model_line(model: dict[str, Any]) -> str:
    return (
        f"{model.get('name')} (variant {model.get('variant')}, pooling {model.get('pooling')}, "
        f"D={model.get('dim')}, sha256 {str(model.get('sha256'))[:12]})"
    )


def _get(d: dict[Any, float], k: int) -> float:
    return d[k] if k in d else d[str(k)]


def _fmt_counts(c: dict[str, int]) -> str:
    return ", ".join(f"{s}: {n:,}" for s, n in c.items())


def plot_metrics(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Bar chart of every metric by direction (at k=10 or the nearest k) and P/R vs k per direction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = result["directions"]
    names = list(dirs)
    ks = sorted({int(k) for d in dirs.values() for k in d["precision"]})
    common = sorted(set.intersection(*({int(k) for k in d["precision"]} for d in dirs.values())))
    k_bar = 10 if 10 in common else (common[-1] if common else ks[0])  # one k that every direction has
    paths = []
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(names)), 4))
    width = 0.8 / len(PERCENT)
    for j, m in enumerate(PERCENT):
        vals = [100 * _get(dirs[n][m], k_bar) if k_bar in {int(x) for x in dirs[n][m]} else 0 for n in names]
        ax.bar(np.arange(len(names)) + j * width - 0.4 + width / 2, vals, width, label=METRIC_TITLES[m])
    ax.set_xticks(np.arange(len(names)), [pretty_direction(n) for n in names], fontsize=8)
    ax.set_ylabel(f"metric @ {k_bar} (%)")
    ax.set_ylim(0, 100)
    ax.legend(ncol=5, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    ax.set_title("Retrieval by direction (wmAP, in label units, is in metrics.md)")
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "metrics_by_direction.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in names:
        kk = sorted(int(k) for k in dirs[n]["precision"])
        p = [100 * _get(dirs[n]["precision"], k) for k in kk]
        r = [100 * _get(dirs[n]["recall"], k) for k in kk]
        line = ax.plot(kk, p, marker="o", label=f"{pretty_direction(n)} P")[0]
        ax.plot(kk, r, marker="s", linestyle="--", color=line.get_color(), label=f"{pretty_direction(n)} R")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("k")
    ax.set_ylabel("%")
    ax.set_title("Precision (solid) and recall (dashed) at k")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "precision_recall_at_k.png"))
    import matplotlib.pyplot as plt2

    plt2.close("all")
    return paths


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return path


def _rgb(dataset: Any, pid: str, sensor: str, cache: dict[str, Any]) -> np.ndarray | None:
    from csmae.sensors import display_rgb

    if dataset is None:
        return None
    try:
        if pid not in cache:
            cache[pid] = dataset.get(pid)
        smp = cache[pid]
        return display_rgb(smp[sensor], dataset.sensors[sensor]) if sensor in smp else None
    except Exception as e:  # a missing preview must not fail the report
        log.warning("no preview for %s/%s: %s", pid, sensor, e)
        return None


def protocol_grids(
    res: Any, out_dir: Path, *, dataset: Any = None, n_queries: int = 3, k: int = 8, seed: int = 0
) -> list[Path]:
    """One grid per direction with ``n_queries`` random queries and their top-k."""
    from csmae.retrieval.embeddings import Embeddings

    label_names: list[str] = []
    paths = []
    cache: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    for name, (scores, idx) in res.rankings.items():
        qs, a_s = name.split("->")
        q: Embeddings = res.queries[qs]
        a: Embeddings = res.archives[a_s]
        label_names = label_names or q.label_names
        pick = np.sort(rng.choice(len(q), size=min(n_queries, len(q)), replace=False))
        rows = []
        for qi in pick:
            ql = q.labels[qi]
            qt = Tile(
                _rgb(dataset, q.ids[qi], qs, cache),
                qs,
                f"query {q.ids[qi]}",
                [_short_labels(ql, label_names)],
            )
            tiles = []
            for rank, (s, j) in enumerate(zip(scores[qi][:k], idx[qi][:k]), 1):
                ov = [label_names[c] for c in np.flatnonzero(ql & a.labels[j])]
                tiles.append(
                    Tile(
                        _rgb(dataset, a.ids[j], a.sensors[j], cache),
                        str(a.sensors[j]),
                        f"#{rank} {s:.3f}",
                        overlap_lines(ov, int(ql.sum()), 1),
                        bool(ov),
                    )
                )
            rows.append((qt, tiles))
        paths.append(draw_grid(rows, out_dir / f"grid_{qs}_to_{a_s}.png", title=pretty_direction(name)))
    return paths


def _short_labels(lab: np.ndarray, names: Sequence[str]) -> str:
    got = [names[int(c)] for c in np.flatnonzero(lab)]
    s = "; ".join(x[:18] for x in got[:2])
    return s + (f" +{len(got) - 2}" if len(got) > 2 else "")


def grid_for_hits(
    retriever: Any,
    hits: Sequence[Any],
    out: str | os.PathLike[str],
    *,
    query_id: str | None,
    query_sensor: str,
    query_raw: np.ndarray | None = None,
) -> Path:
    """Draw one query row (from an archive id or a raw array) and its hits."""
    from csmae.sensors import display_rgb

    def rgb(pid: str, sensor: str) -> np.ndarray | None:
        try:
            return retriever.preview_rgb(pid, sensor)
        except Exception as e:
            log.warning("no preview for %s/%s: %s", pid, sensor, e)
            return None

    if query_raw is not None:
        q_rgb: np.ndarray | None = display_rgb(query_raw, retriever.model.sensors[query_sensor])
        q_labels: list[str] = []
    else:
        q_rgb = rgb(str(query_id), query_sensor)
        q_labels = retriever.labels_of(str(query_id), query_sensor)
    qt = Tile(q_rgb, query_sensor, f"query {query_id or 'file'}", [", ".join(x[:18] for x in q_labels[:2])])
    n_q = len(q_labels) if query_id else None
    tiles = [
        Tile(
            rgb(h.id, h.sensor),
            h.sensor,
            f"#{h.rank} {h.score:.3f}",
            overlap_lines(h.overlap, n_q, 1) if query_id else [h.labels[0][:22] if h.labels else ""],
            bool(h.overlap) if query_id else None,
        )
        for h in hits
    ]
    return draw_grid([(qt, tiles)], out)


def write_report(
    res: Any,
    out: str | os.PathLike[str],
    *,
    dataset: Any = None,
    n_grid_queries: int = 3,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the report folder atomically: metrics.json, metrics.md, plots, grids, manifest.json."""
    from csmae.integrity import checksum_files
    from csmae.retrieval.artifacts import AtomicFolder, base_manifest, write_json_atomic

    result = res.to_dict()
    with AtomicFolder(out, overwrite=overwrite, kind=REPORT_KIND) as tmp:
        write_json_atomic(tmp / "metrics.json", _jsonable(result))
        (tmp / "metrics.md").write_text(metrics_markdown(result))
        files = [p.name for p in plot_metrics(result, tmp)]
        if n_grid_queries > 0:
            files += [p.name for p in protocol_grids(res, tmp, dataset=dataset, n_queries=n_grid_queries)]
        write_json_atomic(
            tmp / "manifest.json",
            base_manifest(
                REPORT_KIND,
                protocol=_jsonable(result["protocol"]),
                files=["metrics.json", "metrics.md", *files],
                **(extra or {}),
                checksums=checksum_files(tmp, ["metrics.json", "metrics.md", *files]),  # csmae verify
            ),
        )
    return Path(out)


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
