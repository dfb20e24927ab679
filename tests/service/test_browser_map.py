"""The map on the search page in headless Chromium: footprints drawn == query + k hits, at the right
coordinates (read back from the Leaflet layers), numbered by rank; clicking one searches from it.

Same setup as test_browser.py (Debian chromium + the playwright package; skipped without them).
With the real v1 samples the footprints are also checked against their JSON polygons (pyproj).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .browser import ARTIFACTS, open_page, require_browser

require_browser()


@pytest.fixture(scope="module")
def page(live_server):
    with open_page(live_server, height=1000) as pg:
        yield pg


def _geometry(retriever, pid, sensor):
    if hasattr(retriever, "geo_of"):  # the fake retriever
        return retriever.geo_of(pid, sensor)["geometry"]
    return retriever.item(pid, sensor)["geometry"]


def _same_ring(got, want, tol):
    got, want = np.asarray(got, float), np.asarray(want, float)
    if len(got) and np.allclose(got[0], got[-1]):
        got = got[:-1]
    if np.allclose(want[0], want[-1]):
        want = want[:-1]
    d = np.abs(got[:, None] - want[None]).max(axis=2)
    return got.shape == want.shape and d.min(axis=0).max() < tol and d.min(axis=1).max() < tol


def _json_ring(s2_root: Path, pid: str):
    import pyproj

    doc = json.loads((s2_root / pid / f"{pid}_labels_metadata.json").read_text())
    c = doc["coordinates"]
    t = pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(doc["projection"]), "EPSG:4326", always_xy=True)
    xs, ys = [c["ulx"], c["lrx"], c["lrx"], c["ulx"]], [c["uly"], c["uly"], c["lry"], c["lry"]]
    lon, lat = t.transform(xs, ys)
    return np.column_stack([lon, lat])


def test_map_draws_query_and_hits(page, live_server, page_retriever, v1_roots):
    page.goto(live_server.url + "/")
    page.wait_for_selector("#item-list .item")
    page.wait_for_selector("#map-card:not([hidden])")
    item = page.locator("#item-list .item").nth(2)
    item.click()
    page.wait_for_selector("#results .result")
    n_results = page.locator("#results .result").count()
    page.wait_for_function(f"window.csmaeMap.footprints().length === {n_results + 1}")
    fps = page.evaluate("window.csmaeMap.footprints()")
    qid, qsensor = item.get_attribute("data-id"), item.get_attribute("data-sensor")
    hits = page_retriever.search_by_id(qid, sensor=qsensor, target="any", k=n_results)
    assert [(f["role"], f["rank"], f["id"], f["sensor"]) for f in fps] == \
        [("query", 0, qid, qsensor)] + [("hit", h.rank, h.id, h.sensor) for h in hits]
    real = not hasattr(page_retriever, "geo_of")
    for f in fps:
        want = _geometry(page_retriever, f["id"], f["sensor"])["coordinates"][0]
        assert _same_ring(f["ring"], want, 1e-7), f
        if real:  # independent of csmae: the pair's JSON corners projected with pyproj
            assert _same_ring(f["ring"], _json_ring(v1_roots[0], f["id"]), 1e-6), f
    labels = sorted(page.locator(".leaflet-tooltip.fp-label").all_inner_texts())
    assert labels == sorted(["Q"] + [str(h.rank) for h in hits])
    assert page.locator("#map-note").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-map.png"), full_page=True)

    # click a hit footprint that does not lie under the query's: the topmost item there (best rank)
    q_ring = fps[0]["ring"]
    target = next(f for f in fps[1:] if not _same_ring(f["ring"], q_ring, 1e-9))
    same_place = [f for f in fps[1:] if _same_ring(f["ring"], target["ring"], 1e-9)]
    expected = min(same_place, key=lambda f: f["rank"])
    lon = float(np.mean(np.asarray(target["ring"])[:-1, 0]))
    lat = float(np.mean(np.asarray(target["ring"])[:-1, 1]))
    page.evaluate("([lat, lon]) => window.csmaeMap.map.setView([lat, lon], 15, { animate: false })",
                  [lat, lon])
    pt = page.evaluate("([lat, lon]) => { const p = window.csmaeMap.map.latLngToContainerPoint([lat, lon]);"
                       " return [p.x, p.y]; }", [lat, lon])
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + pt[0], box["y"] + pt[1])
    page.wait_for_function(
        "([id, sensor]) => { const f = window.csmaeMap.footprints();"
        " return f.length > 0 && f[0].id === id && f[0].sensor === sensor; }",
        arg=[expected["id"], expected["sensor"]])
    assert page.locator("#query-desc .query-id").inner_text() == expected["id"]
    assert not page.external, f"the page loaded external resources: {page.external}"
    assert not page.js_errors, page.js_errors


def test_box_event_for_filters(page, live_server):
    """csmaeMap.startBox(): a drag gives a "csmae:box" event with [west, south, east, north]."""
    page.goto(live_server.url + "/")
    page.wait_for_selector("#map-card:not([hidden])")
    page.evaluate("window._box = null;"
                  " window.addEventListener('csmae:box', e => { window._box = e.detail.bbox; });"
                  " window.csmaeMap.startBox();")
    box = page.locator("#map").bounding_box()
    a, b = (60, 220), (300, 80)
    page.mouse.move(box["x"] + a[0], box["y"] + a[1])
    page.mouse.down()
    page.mouse.move(box["x"] + b[0], box["y"] + b[1], steps=5)
    page.mouse.up()
    page.wait_for_function("window._box !== null")
    got = page.evaluate("window._box")
    # the box corners land on the dragged pixels (within the map's 1 px border)
    px = page.evaluate("(g) => { const m = window.csmaeMap.map;"
                       " const p = m.latLngToContainerPoint([g[1], g[0]]);"
                       " const q = m.latLngToContainerPoint([g[3], g[2]]);"
                       " return [p.x, p.y, q.x, q.y]; }", got)
    assert px == pytest.approx([a[0], a[1], b[0], b[1]], abs=2)
    assert got[0] < got[2] and got[1] < got[3]
