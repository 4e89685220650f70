"""The dashboard in a real browser: Playwright driving the machine's headless Chromium.

Skipped, with the reason in the report, where Chromium (Debian package `chromium`) or the
Playwright package is missing; CI installs both. Playwright never downloads a browser here: it
launches /usr/bin/chromium (or $HOLDGATE_TEST_CHROMIUM).
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.approvals.support import PERSON_TOKENS, api, approval_policy, wait_for_decisions
from tests.dashboard.support import with_catalogs
from tests.support.harness import run_gateway, servers, text_of

CHROMIUM = Path(os.environ.get("HOLDGATE_TEST_CHROMIUM", "/usr/bin/chromium"))
TIMEOUT_MS = 10_000


@pytest.fixture
def chromium() -> Path:
    pytest.importorskip("playwright.async_api", reason="playwright is not installed (pip install -e .[dev])")
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: install Debian's chromium (apt-get install chromium)")
    return CHROMIUM


@asynccontextmanager
async def browser_page(executable: Path) -> AsyncIterator:
    """A fresh page; closed before the gateway stops, so no open event stream delays its shutdown."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(executable), headless=True)
        try:
            context = await browser.new_context(accept_downloads=True)
            page = await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
            await context.close()
        finally:
            await browser.close()


async def test_sign_in_deny_a_held_call_see_api_decisions_live_and_export(tmp_path, chromium):
    from playwright.async_api import expect

    with_catalogs(tmp_path)
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
        browser_page(chromium) as page,
    ):
        # Nothing without signing in: the dashboard sends the browser to the sign-in form.
        await page.goto(gw.url + "/history")
        assert "/login" in page.url
        await page.fill("#token", PERSON_TOKENS["alice"])
        await page.click("button[type=submit]")
        await page.wait_for_url(gw.url + "/history")
        await page.click("nav >> text=Pending")
        await expect(page.get_by_test_id("queue-empty")).to_be_visible()
        await expect(page.get_by_test_id("person")).to_have_text("alice")
        await page.evaluate("window.__sameDocument = true")

        # A held call appears without a reload, with its countdown running.
        first = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-41"}))
        [held] = await wait_for_decisions(gw)
        card = page.locator(f"#decision-{held.id}")
        await expect(card).to_be_visible()
        await expect(card).to_contain_text("job-41")
        await expect(card.locator(".countdown")).to_contain_text("left")
        await expect(card.locator(".risk")).to_contain_text("write, medium")

        # Deny it with a reason, inline.
        await card.locator('input[name="reason"]').fill("job is still needed")
        await card.get_by_role("button", name="Deny").click()
        await expect(card).to_have_count(0)
        await expect(page.locator("#flash")).to_contain_text("denied by alice")
        result = await asyncio.wait_for(first, 10)
        assert result.is_error and "job is still needed" in text_of(result)

        # A decision made elsewhere (the REST API, as bob) leaves the queue without a reload.
        second = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-42"}))
        [other] = await wait_for_decisions(gw)
        other_card = page.locator(f"#decision-{other.id}")
        await expect(other_card).to_be_visible()
        response = await api(gw, "POST", f"/api/decisions/{other.id}/approve", "bob")
        assert response.status_code == 200, response.text
        await expect(other_card).to_have_count(0)
        await expect(page.get_by_test_id("queue-empty")).to_be_visible()
        assert await page.evaluate("window.__sameDocument === true"), "the page was not reloaded"
        await asyncio.wait_for(second, 10)

        # The denial is in the history, and its page tells the story.
        await page.click("nav >> text=History")
        row = page.locator(f"#row-{held.id}")
        await expect(row).to_contain_text("denied")
        await expect(row).to_contain_text("job is still needed")
        await expect(page.locator(f"#row-{other.id}")).to_contain_text("approved")
        await row.get_by_role("link").first.click()
        await expect(page.get_by_test_id("reason")).to_have_text("job is still needed")

        # Export the current filter (denied only) as CSV.
        await page.goto(gw.url + "/history?status=denied")
        async with page.expect_download() as download_info:
            await page.get_by_test_id("export-csv").click()
        download = await download_info.value
        rows = list(csv.DictReader(io.StringIO(Path(await download.path()).read_text())))
        assert [(r["id"], r["status"], r["decided_by"]) for r in rows] == [(held.id, "denied", "alice")]
