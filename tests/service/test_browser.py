"""End to end: the search page in headless Debian Chromium (Playwright) against a live loopback server.

Skipped when /usr/bin/chromium or the playwright package is missing (``apt-get install chromium``;
``pip install -e '.[dev]'``; never ``playwright install``). Saves test-artifacts/serve-page.png.
"""

from __future__ import annotations

import numpy as np
import pytest

from .browser import ARTIFACTS, open_page, require_browser

require_browser()


@pytest.fixture(scope="module")
def page(live_server):
    with open_page(live_server, height=900) as pg:
        yield pg


def test_click_a_query_shows_results(page, live_server, page_retriever):
    page.goto(live_server.url + "/")
    page.wait_for_selector("#item-list .item")
    items = page.locator("#item-list .item")
    assert items.count() == 12
    n_items = page.evaluate("fetch('/api/health').then(r => r.json()).then(h => h.counts.vectors)")
    assert items.count() == min(12, n_items)
    items.nth(2).click()
    page.wait_for_selector("#results .result")
    k = min(12, n_items - 1)  # default k; the query's own row is left out
    results = page.locator("#results .result")
    assert results.count() == k
    status = page.locator("#status").inner_text()
    assert f"{k} results" in status and f"P@{k}" in status
    qid = items.nth(2).get_attribute("data-id")
    qsensor = items.nth(2).get_attribute("data-sensor")
    expected = page_retriever.search_by_id(qid, sensor=qsensor, target="any", k=12)
    shown = [page.locator("#results .result .item-id").nth(i).inner_text() for i in range(k)]
    assert shown == [h.id for h in expected]
    # every image has loaded and has an alt text; the live region and labelled controls exist
    page.wait_for_function("Array.from(document.images).filter(i => !i.hidden).every(i => i.complete)")
    broken = page.evaluate(
        "Array.from(document.querySelectorAll('#results img')).filter(i => !i.naturalWidth).length")
    assert broken == 0
    alts = page.eval_on_selector_all("#results img, #query-img", "els => els.map(e => e.alt)")
    assert all(alts)
    assert page.get_attribute("#status", "aria-live") == "polite"
    text = page.inner_text("main")
    assert "null" not in text and "undefined" not in text and "NaN" not in text
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)
    assert not page.external, f"the page loaded external resources: {page.external}"
    assert not page.js_errors, page.js_errors


def test_keyboard_only_search_with_target(page, live_server):
    page.goto(live_server.url + "/")
    page.wait_for_selector("#item-list .item")
    page.check("#target-s1")  # search in S1 only
    page.focus("#random-btn")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .result")
    page.wait_for_function("document.querySelector('#status').textContent.includes('S1 radar')")
    badges = page.eval_on_selector_all("#results .result-img .badge", "els => els.map(e => e.textContent)")
    assert badges and set(badges) == {"S1"}
    # tabs follow the ARIA pattern: arrow keys move between them
    page.focus("#tab-browse")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-upload", "aria-selected") == "true"
    assert page.is_visible("#upload-files")


def test_upload_search_in_browser(page, live_server, page_retriever, tmp_path):
    pid = page_retriever.items(sensor="s2", limit=4)[1][-1]["id"]
    path = tmp_path / "query.npy"
    np.save(path, page_retriever.sample(pid)["s2"])
    page.goto(live_server.url + "/")
    page.wait_for_selector("#item-list .item")
    page.click("#tab-upload")
    page.select_option("#query-sensor", "s2")
    page.set_input_files("#upload-files", str(path))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#results .result")
    first = page.locator("#results .result .item-id").first.inner_text()
    assert first == pid
    assert page.get_attribute("#query-img", "src").startswith("data:image/png")
    assert page.is_hidden("#pk-stat")  # labels of an upload are unknown


def test_upload_s1_geotiffs_sets_sensor_from_names(page, live_server, page_retriever, tmp_path):
    import tifffile

    pid = page_retriever.items(sensor="s1", limit=1)[1][0]["id"]
    raw = page_retriever.sample(pid)["s1"]
    paths = []
    for i, band in enumerate(("VV", "VH")):  # the S1 sensor spec's band order
        paths.append(tmp_path / f"{pid}_{band}.tif")
        tifffile.imwrite(paths[-1], raw[i].astype(np.float32))
    page.goto(live_server.url + "/")
    page.wait_for_selector("#item-list .item")
    page.select_option("#query-sensor", "s2")
    page.click("#tab-upload")
    page.set_input_files("#upload-files", [str(p) for p in paths])
    assert page.input_value("#query-sensor") == "s1"  # inferred from the _VV/_VH names
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#results .result")
    top = page.locator("#results .result").first
    assert top.locator(".item-id").inner_text() == pid
    assert top.locator(".badge").inner_text() == "S1"


def test_error_is_announced(page, live_server, tmp_path):
    bad = tmp_path / "notes.npy"
    bad.write_bytes(b"not numpy")
    page.goto(live_server.url + "/")
    page.click("#tab-upload")
    page.set_input_files("#upload-files", str(bad))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert page.get_attribute("#error", "role") == "alert"
    assert "npy" in page.inner_text("#error")


def test_controls_have_accessible_names_and_focus_order(page, live_server):
    page.goto(live_server.url + "/")
    page.wait_for_selector("#item-list .item")
    for role, name in [("combobox", "Split"), ("combobox", "Sensor"), ("combobox", "Label"),
                       ("combobox", "Query sensor"), ("spinbutton", "Results (k)"), ("radio", "Both sensors"),
                       ("tab", "Browse archive"), ("tab", "Upload image"), ("button", "Random query"),
                       ("list", "Archive items"), ("button", "Next ›")]:
        assert page.get_by_role(role, name=name, exact=True).count() == 1, (role, name)
    unnamed = page.evaluate("""Array.from(document.querySelectorAll('input, select, button'))
        .filter(e => !e.labels?.length && !e.getAttribute('aria-label') && !e.textContent.trim()
                     && !e.closest('label')).map(e => e.id || e.outerHTML.slice(0, 60))""")
    assert not unnamed, unnamed
    # the first Tab reaches the skip link, which moves focus to the results heading
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")
    page.wait_for_function("document.activeElement.id === 'results-heading'")
