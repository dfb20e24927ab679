"""The page across the antimeridian in headless Chromium: an archive whose footprints cross 180 deg
(tests/geo/antimeridian_fixtures.py) draws as one group next to the query, never stretched across
the world; a box dragged across the line becomes a bbox with west > east, drives the search, and
round-trips the URL. References: the store's footprints and the retrieval core's own answers.

Same setup as test_browser_map.py (Debian chromium + the playwright package; skipped without them).
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from .browser import ARTIFACTS, open_page, require_browser
from .conftest import LiveServer

require_browser()


@pytest.fixture(scope="module")
def served(antimeridian_archive):
    from csmae.retrieval import Retriever
    from csmae.service import create_app

    a = antimeridian_archive
    r = Retriever.load(a.index, model_dir=a.model, data=[str(a.store)])
    with LiveServer(create_app(r)) as server:
        yield server, r


def _parts(geometry_wkb) -> list[np.ndarray]:
    g = shapely.from_wkb(geometry_wkb)
    return [np.asarray(p.exterior.coords)[:-1] for p in (g.geoms if g.geom_type == "MultiPolygon" else [g])]


def _store(a) -> dict[str, bytes]:
    import pyarrow.parquet as pq

    t = pq.read_table(a.store / "pairs.parquet", columns=["id", "geometry"]).to_pydict()
    return dict(zip(t["id"], t["geometry"], strict=True))


def _same_ring_shifted(drawn, want) -> bool:
    """``drawn`` is ``want`` moved by a whole number of turns (360 deg) in longitude."""
    drawn, want = np.asarray(drawn, float), np.asarray(want, float)
    if len(drawn) and np.allclose(drawn[0], drawn[-1]):
        drawn = drawn[:-1]
    if drawn.shape != want.shape:
        return False
    turns = np.round((drawn[:, 0] - want[:, 0]) / 360.0)
    moved = want + np.column_stack([turns * 360.0, np.zeros(len(want))])
    d = np.abs(drawn[:, None] - moved[None]).max(axis=2)
    return len(set(turns.tolist())) == 1 and d.min(axis=0).max() < 1e-7 and d.min(axis=1).max() < 1e-7


def test_map_draws_across_the_line_and_a_box_across_it_filters(served, antimeridian_archive):
    from tests.geo.antimeridian_fixtures import CROSSING_COL

    server, r = served
    a = antimeridian_archive
    geo = _store(a)
    pid = a.ids_in_col(CROSSING_COL)[1]
    k = 2 * len(a.cells) - 1
    with open_page(server, height=1000) as page:
        page.goto(f"{server.url}/?id={pid}&sensor=s2&target=any&k={k}")
        page.wait_for_selector("#map-card:not([hidden])")
        page.wait_for_function("(n) => window.csmaeMap.footprints().length === n", arg=k + 1)
        fps = page.evaluate("window.csmaeMap.footprints()")
        assert fps[0]["role"] == "query" and fps[0]["id"] == pid
        # every drawn part, as lon/lat rings (``rings``; a page without it drew one ring per footprint)
        for f in fps:
            f["rings"] = [r for r in f.get("rings") or [f["ring"]] if r and isinstance(r[0][0], float)]
        lons = np.concatenate([np.asarray(ring)[:, 0] for f in fps for ring in f["rings"]])
        assert lons.max() - lons.min() < 0.1, (lons.min(), lons.max())  # one group, not across the world
        # every part of every footprint is drawn: the stored part moved by whole turns
        for f in fps:
            want = _parts(geo[f["id"]])
            assert len(f["rings"]) == len(want), f["id"]
            for ring in f["rings"]:
                assert any(_same_ring_shifted(ring, w) for w in want), f["id"]
        # ... as one group around 180 deg: the crossing query's two parts side by side
        assert lons.min() < 180 < lons.max()
        q_lons = [np.asarray(ring)[:, 0] for ring in fps[0]["rings"]]
        assert len(q_lons) == 2 and sorted(round(float(x.min()), 6) for x in q_lons)[1] == 180.0
        view = page.evaluate("(() => { const b = window.csmaeMap.map.getBounds();"
                             " return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; })()")
        assert view[2] - view[0] < 1.0 and view[0] <= lons.min() and view[2] >= lons.max()
        # on screen: the query's footprint (one SVG path of two parts) spans just its own ground
        rects = page.evaluate("Array.from(document.querySelectorAll('#map path'))"
                              ".filter(p => (p.getAttribute('aria-label') || '').startsWith('query'))"
                              ".map(p => { const r = p.getBoundingClientRect(); return [r.left, r.right]; })")
        q_all = np.concatenate(q_lons)
        ends = [page.evaluate("(lon) => window.csmaeMap.map.latLngToContainerPoint([52, lon]).x", float(x))
                for x in (q_all.min(), q_all.max())]
        box = page.locator("#map").bounding_box()
        assert len(rects) == 1, rects
        (left, right), = rects
        assert abs(left - (box["x"] + ends[0])) < 3 and abs(right - (box["x"] + ends[1])) < 3, (rects, ends)
        assert box["x"] <= left and right <= box["x"] + box["width"] and right - left < box["width"] / 2

        # drag a box from west of the line to east of it
        page.evaluate("window._box = null;"
                      " window.addEventListener('csmae:box', e => { window._box = e.detail.bbox; });"
                      " window.csmaeMap.startBox();")
        w_lon, e_lon = 179.985, 180.01  # map longitudes (past 180 east of the line)
        q_lat = np.concatenate([np.asarray(rg)[:, 1] for rg in fps[0]["rings"]])
        lat0, lat1 = float(q_lat.min()) - 0.002, float(q_lat.max()) + 0.002
        to_px = ("([lat, lon]) => { const p = window.csmaeMap.map.latLngToContainerPoint([lat, lon]);"
                 " return [p.x, p.y]; }")
        p0, p1 = (page.evaluate(to_px, [lat, lon]) for lat, lon in ((lat0, w_lon), (lat1, e_lon)))
        page.mouse.move(box["x"] + p0[0], box["y"] + p0[1])
        page.mouse.down()
        page.mouse.move(box["x"] + p1[0], box["y"] + p1[1], steps=5)
        page.mouse.up()
        page.wait_for_function("() => window._box !== null")
        got = page.evaluate("window._box")
        assert got[0] > got[2], got  # west > east: across the line
        assert got[0] == pytest.approx(w_lon, abs=1e-3) and got[2] == pytest.approx(e_lon - 360, abs=1e-3)
        assert page.evaluate("window.csmaeFilters.state.bbox") == got
        assert "across the antimeridian" in page.locator("#filter-summary").inner_text()
        # the search with that box: the retrieval core's answer
        where = {"bbox": [round(v, 5) for v in got]}  # the page sends 5 decimals
        want = [h.id for h in r.search_by_id(pid, sensor="s2", k=k, where=where)]
        assert want and len(want) < k
        page.wait_for_function(
            "(want) => Array.from(document.querySelectorAll('#results .result .item-id'))"
            ".map(e => e.textContent).join('|') === want", arg="|".join(want))
        # the box is drawn across the line too (one rectangle, not the world)
        box_rects = page.evaluate("Array.from(document.querySelectorAll('#map path'))"
                                  ".filter(p => p.getAttribute('stroke') === '#6b4fbb')"
                                  ".map(p => { const r = p.getBoundingClientRect(); return r.width; })")
        assert box_rects and max(box_rects) < box["width"]
        # the URL carries it (W > E) and restores it
        url = page.url
        assert "bbox=" in url
        bbox_param = url.split("bbox=")[1].split("&")[0].replace("%2C", ",").split(",")
        assert float(bbox_param[0]) > float(bbox_param[2])
        page.goto(url)
        page.wait_for_function("(n) => window.csmaeMap.footprints().length === n", arg=len(want) + 1)
        assert page.evaluate("window.csmaeFilters.state.bbox") == [float(x) for x in bbox_param]
        shown = page.evaluate("Array.from(document.querySelectorAll('#results .result .item-id'))"
                              ".map(e => e.textContent)")
        assert shown == want
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-map-antimeridian.png"), full_page=True)
        assert not page.external, page.external
        errors = [e for e in page.js_errors if "Failed to load resource" not in e]
        assert not errors, errors


def test_initial_view_is_the_archive_across_the_line(served, antimeridian_archive):
    server, _ = served
    with open_page(server, height=900) as page:
        page.goto(server.url + "/")
        page.wait_for_selector("#map-card:not([hidden])")
        ext = page.evaluate("fetch('/api/health').then(r => r.json()).then(h => h.geo.extent)")
        assert ext[0] > ext[2]  # W > E
        page.wait_for_function("() => window.csmaeMap.map && window.csmaeMap.map.getBounds().getEast() > 180")
        view = page.evaluate("(() => { const b = window.csmaeMap.map.getBounds();"
                             " return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; })()")
        assert view[0] <= ext[0] and view[2] >= ext[2] + 360 and view[2] - view[0] < 1.0
        assert not page.js_errors, page.js_errors
