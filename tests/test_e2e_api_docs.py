"""`/api/docs` in a real headless Chromium: it renders our operations from assets served here.

The browser records every request the page makes; each must go to the appliance
(127.0.0.1), and the page's Content-Security-Policy must refuse nothing it needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import sync_playwright

from ghostcrate.appliance.openapi import document
from tests.support.appliance import Appliance

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
CHROMIUM = "/usr/bin/chromium"


def test_the_docs_page_renders_every_operation_and_reaches_no_other_host(
    start_appliance: StartAppliance,
) -> None:
    appliance = start_appliance()
    operations = sum(len(item) for item in document()["paths"].values())
    requested: list[str] = []
    console: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
            response = page.goto(f"{appliance.url}/api/docs")
            assert response is not None
            assert response.status == 200
            assert "script-src 'self'" in response.headers["content-security-policy"]
            page.wait_for_selector(".opblock", timeout=20_000)
            page.wait_for_load_state("networkidle")
            rendered = page.locator(".opblock").count()
            title = page.locator(".info .title").inner_text()
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            page.locator(".opblock-summary", has_text="/api/v1/crates/{name}/owners").first.click()
            page.wait_for_selector(".opblock-body .parameters", timeout=10_000)
            body = page.locator(".opblock.is-open").inner_text()
        finally:
            browser.close()
    assert rendered == operations, paths
    assert title.startswith("GhostCrate")
    assert {path.replace("\u200b", "") for path in paths} >= {
        "/api/v1/crates/new",
        "/api/v1/orgs/{org}/teams/{team}/members",
        "/readyz",
    }
    assert "A crate name" in body  # the parameter's description, from our spec
    assert f"{appliance.url}/api/openapi.json" in requested
    elsewhere = [url for url in requested if urlsplit(url).hostname != "127.0.0.1"]
    assert not elsewhere, elsewhere
    refused = [line for line in console if "Content Security Policy" in line or "error" in line]
    assert not refused, json.dumps(console, indent=1)
