"""The page in headless Chromium over a real index of a series archive: the timeline chart under the
map (points == the acquisitions of the query's place, distances as brute force), thumbnails that
search, the offline Natural Earth base layer (shipped, nothing from outside), and the URL holding
the query and filters (a shared link restores them).

Same setup as test_browser.py (Debian chromium + the playwright package; skipped without them).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlparse

import pytest

from tests.retrieval.conftest import timeline_index  # noqa: F401 - the fixture
from tests.retrieval.test_timeline import _brute

from .browser import open_page, require_browser
from .conftest import LiveServer

require_browser()


@pytest.fixture(scope="module")
def series_server(timeline_index):  # noqa: F811
    from csmae.retrieval.retriever import Retriever
    from csmae.service import create_app

    index, _ = timeline_index
    with LiveServer(create_app(Retriever.load(index))) as server:
        yield server


def _until(page, expr: str, timeout: float = 15.0) -> None:
    """Poll ``expr`` from Python (the page's CSP forbids the eval that wait_for_function polls with)."""
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(expr):
        assert time.monotonic() < deadline, f"timed out waiting for {expr}"
        time.sleep(0.1)


def _first_item(emb_dir):
    from csmae.retrieval.embeddings import load_embeddings

    e = load_embeddings(emb_dir)
    i = next(i for i in range(len(e)) if e.sensors[i] == "s2")
    return str(e.ids[i]), e.meta["place"][i]


def test_timeline_chart_basemap_and_shareable_url(series_server, timeline_index):  # noqa: F811
    _, emb = timeline_index
    pid, place = _first_item(emb)
    want = _brute(emb, place)
    query = {"id": pid, "sensor": "s2", "target": "s1", "k": "5", "start": "2018-04-01"}
    with open_page(series_server, height=1400) as page:
        page.goto(f"{series_server.url}/?{urlencode(query)}")
        page.wait_for_selector("#results .result")
        page.wait_for_selector("#timeline-card[data-state=drawn]")
        # the shared link's query, settings and filter are restored
        assert page.locator("#target-s1").is_checked() and page.locator("#k").input_value() == "5"
        assert page.locator("#f-start").input_value() == "2018-04-01"
        sensors = page.eval_on_selector_all("#results .result .badge", "els => els.map(e => e.textContent)")
        assert sensors and set(sensors) == {"S1"}
        # the chart: every acquisition of the place in time order, distances to the first (brute force)
        pts = page.evaluate("window.csmaeTimeline.points()")
        assert [(p["id"], p["sensor"], p["datetime"]) for p in pts] == [w[:3] for w in want]
        for p, w in zip(pts, want, strict=True):
            assert p["distance"] == pytest.approx(max(0.0, w[3]), abs=1e-5)
        xs = [p["x"] for p in pts]
        assert xs == sorted(xs) and xs[0] < xs[-1]
        ys = [p["y"] for p in pts]  # SVG y grows downwards: a larger distance is drawn higher
        order = sorted(range(len(pts)), key=lambda i: pts[i]["distance"])
        assert ys[order[0]] >= ys[order[-1]]
        assert page.locator("#timeline-chart .is-query").get_attribute("data-id") == pid
        thumbs = page.locator("#timeline-thumbs .timeline-thumb")
        assert thumbs.count() == len(want)
        _until(page, "Array.from(document.querySelectorAll('#timeline-thumbs img'))"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        # the offline base layer: land, coastlines and borders from the shipped Natural Earth data
        _until(page, "window.csmaeBasemap && window.csmaeBasemap.info !== null")
        info = page.evaluate("window.csmaeBasemap.info")
        assert info["land"] >= 1 and info["coast"] > 10 and info["borders"] > 10
        assert page.locator(".leaflet-csmae-basemap-pane canvas").count() == 1
        # reference: the previous acquisition
        page.select_option("#timeline-reference", "previous")
        _until(page, "window.csmaeTimeline.points().length && "
                               "window.csmaeTimeline.points()[0].distance === null")
        prev = _brute(emb, place, "previous")
        got = page.evaluate("window.csmaeTimeline.points()")
        for p, w in zip(got[1:], prev[1:], strict=True):
            assert p["distance"] == pytest.approx(max(0.0, w[3]), abs=1e-5)
        # a thumbnail searches with that acquisition, and the URL follows
        other = want[-1]
        thumb = f"#timeline-thumbs .timeline-thumb[data-id='{other[0]}'][data-sensor='{other[1]}']"
        page.locator(thumb).click()
        _until(page, f"location.search.includes('id={other[0]}')")
        url = parse_qs(urlparse(page.url).query)
        assert url["sensor"] == [other[1]] and url["start"] == ["2018-04-01"] and url["k"] == ["5"]
        page.wait_for_selector(f"#timeline-chart .is-query[data-id='{other[0]}']")
        assert page.external == [], page.external
        assert page.js_errors == [], page.js_errors
