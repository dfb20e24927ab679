"""Shared setup of the headless-Chromium page tests (Debian chromium + the playwright package)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def require_browser() -> None:
    """Skip the calling test module when chromium or playwright is missing (call at module level)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (apt-get install -y chromium): browser test skipped",
                    allow_module_level=True)
    pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')")


@contextmanager
def open_page(live_server, *, height: int) -> Iterator:
    """A page of headless Chromium that records off-loopback requests (``.external``) and JS errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1360, "height": height})
        pg = context.new_page()
        external: list[str] = []
        local = (live_server.url, "data:")
        pg.on("request", lambda r: None if r.url.startswith(local) else external.append(r.url))
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.external, pg.js_errors = external, errors
        pg.set_default_timeout(15_000)
        yield pg
        context.close()
        browser.close()
