"""``csmae demo``: the quick run end to end, its numbers against a brute-force recomputation,
resumption, the shipped real samples against the readers, and the effect rule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from csmae.demo import evaluation as ev
from csmae.demo.recipe import FULL, QUICK, get_recipe


def _brute_map(q_vec: np.ndarray, q_lab: np.ndarray, a_vec: np.ndarray, a_lab: np.ndarray,
               k: int) -> float:
    """mAP@k of method.md section 7, one query at a time (cosine, ties by archive order)."""
    qn = q_vec / np.linalg.norm(q_vec, axis=1, keepdims=True)
    an = a_vec / np.linalg.norm(a_vec, axis=1, keepdims=True)
    aps = []
    for i in range(len(qn)):
        s = an.astype(np.float64) @ qn[i].astype(np.float64)
        top = np.argsort(-s, kind="stable")[:k]
        rel = (a_lab[top] & q_lab[i]).any(axis=1)
        prec = np.cumsum(rel) / np.arange(1, k + 1)
        aps.append(float((prec * rel).sum() / rel.sum()) if rel.any() else 0.0)
    return float(np.mean(aps))


def _rows(emb_dir: Path, sensor: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    parts = sorted(emb_dir.glob("part-*.parquet"))
    df = pd.concat([pd.read_parquet(p) for p in parts])
    df = df[(df["sensor"] == sensor) & (df["split"] == split)]
    vectors = np.stack(df["vector"].to_numpy()).astype(np.float32)
    return vectors, np.stack(df["labels"].to_numpy()).astype(bool)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from csmae.cli import main

    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def test_quick_demo_writes_a_self_contained_report(quick_demo: Path) -> None:
    rep = quick_demo / "report"
    md, page = (rep / "report.md").read_text(), (rep / "report.html").read_text()
    figures = sorted((rep / "figures").glob("*.png"))
    assert len(figures) >= 6
    for f in figures:  # every figure of the Markdown report is embedded in the HTML one
        assert f"figures/{f.name}" in md
    assert page.count("src='data:image/png;base64,") == len(figures)
    assert "src='figures/" not in page and 'src="figures/' not in page
    assert "csmae serve" in md and str(quick_demo / "index") in md
    assert "synthetic data only" in md and "CDLA-Permissive-1.0" in md
    state = json.loads((quick_demo / "demo.json").read_text())
    assert state["status"] == "completed"
    for stage in ("synthetic", "real", "train:csmae", "train:mae_s1", "train:mae_s2", "embed:csmae", "index"):
        assert state["stages"][stage]["status"] == "done"


def test_quick_demo_numbers_match_a_brute_force_recomputation(quick_demo: Path) -> None:
    m = json.loads((quick_demo / "report" / "metrics.json").read_text())
    for series in ("csmae", "mae", "random"):
        assert set(m["models"][series]) == set(ev.DIRECTIONS)
    emb = quick_demo / "embeddings"
    for (q_model, a_model), d, series in (
        (("csmae", "csmae"), "s1->s2", "csmae"),
        (("csmae", "csmae"), "s2->s2", "csmae"),
        (("mae_s1", "mae_s2"), "s1->s2", "mae"),  # the baseline: S1 by the S1-MAE, S2 by the S2-MAE
        (("mae_s2", "mae_s1"), "s2->s1", "mae"),
    ):
        qs, a_s = d.split("->")
        qv, ql = _rows(emb / q_model, qs, "val")
        av, al = _rows(emb / a_model, a_s, "test")
        want = _brute_map(qv, ql, av, al, 10)
        assert m["models"][series][d]["map"]["10"] == pytest.approx(want, abs=1e-5), (series, d)
    # the report's sentences are formatted from these numbers
    md = (quick_demo / "report" / "report.md").read_text()
    c, b = m["models"]["csmae"]["s1->s2"]["map"]["10"], m["models"]["mae"]["s1->s2"]["map"]["10"]
    assert f"S1→S2 mAP@10 {c:.2f} vs {b:.2f} for the uni-modal MAEs" in md
    shown = m["effect"]["shown"]
    assert ("main effect is shown" in md) == shown and ("main effect is NOT shown" in md) == (not shown)


def test_quick_demo_resumes_without_redoing_stages(quick_demo: Path) -> None:
    from csmae.demo import run_demo

    before = json.loads((quick_demo / "report" / "metrics.json").read_text())
    res = run_demo(quick_demo, quick=True)
    after = json.loads(res.metrics_json.read_text())
    assert all(st.get("resumed") for name, st in res.stages.items() if name != "report")
    assert after["models"] == before["models"]
    with pytest.raises(FileExistsError, match="other options"):
        run_demo(quick_demo, quick=True, seed=1)


def test_real_asset_equals_the_readers(tmp_path: Path, shared_data: Path) -> None:
    from csmae.data import open_dataset
    from csmae.data.store import StoreDataset
    from csmae.demo import write_real_store

    store = StoreDataset(write_real_store(tmp_path / "real"))
    assert len(store) == 34 and len(set(store.ids)) == 34
    for src in ([shared_data / "reben" / "BigEarthNet-V2-LMDB"],
                [shared_data / "bigearthnet-v1" / "BigEarthNet-v1.0",
                 shared_data / "bigearthnet-v1" / "BigEarthNet-S1-v1.0"],
                [shared_data / "bigearthnet-encoded-lmdb"]):
        ds = open_dataset(*src)
        for i in (0, len(ds) - 1):
            want, got = ds[i], store.get(ds.ids[i])
            np.testing.assert_array_equal(got["s1"], want["s1"])
            np.testing.assert_array_equal(got["s2"], want["s2"])
            np.testing.assert_array_equal(got["labels"], want["labels"])


def test_recipes_train_the_three_models_at_the_same_size_and_budget() -> None:
    for r in (FULL, QUICK):
        cs, m1, m2 = (r.model_overrides(k) for k in ("csmae", "mae_s1", "mae_s2"))
        assert cs["private_depth"] + cs["shared_depth"] == m1["shared_depth"] == m2["shared_depth"] == r.depth
        same = ("embed_dim", "num_heads", "decoder_embed_dim", "decoder_depth", "mask_ratio")
        assert all(cs[k] == m1[k] == m2[k] for k in same)
        fits = [r.fit_dict(k, store="x", seed=0) for k in ("csmae", "mae_s1", "mae_s2")]
        for sec in ("optim", "schedule", "trainer"):
            assert fits[0][sec] == fits[1][sec] == fits[2][sec]
    assert get_recipe(False, 3000).n_pairs == 3000
    with pytest.raises(ValueError, match="at least 50"):
        get_recipe(True, 10)


def _fake(values: dict[str, float]) -> dict[str, dict[str, dict[int, float]]]:
    return {d: {"map": {10: values.get(d, 0.5)}} for d in ev.DIRECTIONS}


def test_effect_rule() -> None:
    base = _fake({"s1->s2": 0.40, "s2->s1": 0.42, "s1->s1": 0.70, "s2->s2": 0.75})
    good = _fake({"s1->s2": 0.60, "s2->s1": 0.55, "s1->s1": 0.68, "s2->s2": 0.76})
    e = ev.effect({"csmae": good, "mae": base, "random": _fake({})})  # type: ignore[dict-item]
    assert e.shown and e.cross_gain["s1->s2"] == pytest.approx(0.20)
    weak = _fake({"s1->s2": 0.60, "s2->s1": 0.44, "s1->s1": 0.70, "s2->s2": 0.75})  # S2->S1 gain only 0.02
    assert not ev.effect({"csmae": weak, "mae": base, "random": _fake({})}).shown  # type: ignore[dict-item]
    worse_uni = _fake({"s1->s2": 0.60, "s2->s1": 0.55, "s1->s1": 0.60, "s2->s2": 0.75})
    assert not ev.effect({"csmae": worse_uni, "mae": base, "random": _fake({})}).shown  # type: ignore[dict-item]
    assert re.search(r"at least 0\.05", e.rule)


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path: Path) -> None:
    from csmae.demo import run_demo

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a csmae demo folder"):
        run_demo(tmp_path, quick=True, overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_quick_demo_report_opens_in_a_browser_with_all_pictures(quick_demo: Path) -> None:
    """Headless Debian Chromium (Playwright) loads report.html from disk: every picture decodes, and
    the page asks for nothing outside itself. Skipped without Chromium or playwright."""
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    page_file = quick_demo / "report" / "report.html"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        outside: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else outside.append(r.url))
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.src.slice(0, 22)])"
        )
        artifacts = Path(__file__).resolve().parents[1] / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        page.screenshot(path=str(artifacts / "demo-report.png"), full_page=False)
        browser.close()
    figures = {p.name for p in (quick_demo / "report" / "figures").glob("*.png")}
    assert len(images) >= len(figures) >= 5
    assert all(done and width > 0 for done, width, _ in images), images
    assert all(src.startswith("data:image/png;base64") for _, _, src in images), images
    assert outside == []


def test_quick_demo_change_and_fused_metrics_match_a_brute_force_recomputation(quick_demo: Path) -> None:
    """metrics.json "change" (AUC by pair counting over per-place loops) and "fused" keys."""
    import itertools

    m = json.loads((quick_demo / "report" / "metrics.json").read_text())
    change, fused = m["change"], m["fused"]
    names = {"s2->s2", "s1->s1", "s2->s1", "pixel s2->s2", "pixel s1->s1"}
    assert set(change["auc"]) == set(change["precision_at_k"]) == names
    assert set(fused["map@10"]) == {"s1", "s2", "s1+s2"}
    truth = json.loads((quick_demo / "data" / "series" / "manifest.json").read_text())
    truth = truth["source"]["synthetic_series"]
    changed = {p["place"] for p in truth["places"] if p["changed"]}
    from csmae.retrieval.embeddings import load_embeddings

    emb = load_embeddings(quick_demo / "embeddings" / "series")
    day = [t.strftime("%Y-%m-%d") for t in emb.meta["datetime"]]
    dist = {}
    for p in sorted(set(emb.meta["place"])):
        def period(s: str, lo: str, hi: str, p: str = p) -> np.ndarray:
            vs = [emb.vectors[i] / np.linalg.norm(emb.vectors[i]) for i in range(len(emb))
                  if emb.meta["place"][i] == p and emb.sensors[i] == s and lo <= day[i] < hi
                  and not (s == "s2" and emb.ids[i] in truth["cloud_s2"])]
            return np.sum(vs, axis=0) / np.linalg.norm(np.sum(vs, axis=0)) if vs else None

        b, a = period("s2", "2018-04-01", "2018-06-05"), period("s2", "2018-07-26", "2018-10-01")
        if b is not None and a is not None:
            dist[p] = 1 - float(b @ a)
    pos = [d for p, d in dist.items() if p in changed]
    neg = [d for p, d in dist.items() if p not in changed]
    pairs = [1.0 if x > y else 0.5 if x == y else 0.0 for x, y in itertools.product(pos, neg)]
    assert change["auc"]["s2->s2"] == pytest.approx(np.mean(pairs), abs=1e-6)
    assert change["k"]["s2->s2"] == len(pos)
    md = (quick_demo / "report" / "report.md").read_text()
    assert f"S2→S2 {change['auc']['s2->s2']:.3f}" in md and "change_map.png" in md
