"""The page's filter card in headless Chromium: label chips, country, date range and box reach the API
and the results shown are the filtered search's (skipped without /usr/bin/chromium or playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from csmae.retrieval.index import build_index
from csmae.retrieval.retriever import Retriever

from ..service.conftest import LiveServer
from .test_filters_http import IDS, with_meta
from .test_index_grow import make_emb

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("chromium not installed: browser test skipped", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")


def test_filter_controls_drive_the_search(tmp_path):
    from csmae.service import create_app

    build_index(with_meta(make_emb(IDS)), "exact", tmp_path / "idx")
    r = Retriever.load(tmp_path / "idx")
    with LiveServer(create_app(r)) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        requests: list[str] = []
        page.on("request", lambda q: requests.append(q.url) if "/api/search" in q.url else None)
        page.set_default_timeout(15_000)
        page.goto(server.url + "/")
        page.wait_for_selector("#filters-card .filter-chip")
        page.wait_for_selector("#item-list .item")
        first = page.locator("#item-list .item").first
        qid, qsensor = first.get_attribute("data-id"), first.get_attribute("data-sensor")
        first.click()
        page.wait_for_selector("#results .result")
        # label chip "Pastures" -> any; country Portugal; dates; a box (what the map's draw hook sets)
        page.locator("#filters-card .filter-chip", has_text="Pastures").click()
        page.select_option("#f-country", ["Portugal"])
        page.fill("#f-start", "2017-09-01")
        page.dispatch_event("#f-start", "change")
        page.evaluate("window.csmaeFilters.setBox([-10, 36, 15, 60])")
        page.wait_for_function("document.querySelector('#filter-summary').textContent.includes('drawn box')")
        page.wait_for_timeout(500)
        where = {
            "labels_any": ["Pastures"],
            "country": ["Portugal"],
            "start": "2017-09-01",
            "bbox": [-10, 36, 15, 60],
        }
        want = [h.id for h in r.search_by_id(qid, sensor=qsensor, k=12, where=where)]
        page.wait_for_function(
            f"Array.from(document.querySelectorAll('#results .result .item-id')).map(e => e.textContent)"
            f".join('|') === {'|'.join(want)!r}"
        )
        last = requests[-1]
        assert "labels_any=Pastures" in last and "country=Portugal" in last and "bbox=" in last
        # cycling the chip to "none" excludes the label
        chip = page.locator("#filters-card .filter-chip", has_text="Pastures")
        chip.click()
        chip.click()
        assert chip.get_attribute("data-mode") == "none"
        page.wait_for_function("performance.now() > 0")
        page.wait_for_timeout(500)
        assert "labels_none=Pastures" in requests[-1]
        assert not errors, errors
        browser.close()
