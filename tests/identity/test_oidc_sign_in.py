"""Approvers sign in with the team's identity provider: a real OpenID provider (npm `oidc-provider`) and a real
browser (Playwright driving the machine's Chromium), authorization code with PKCE.

A link to a decision (as Slack and email send) asks for sign-in first, goes through the provider's login, and comes
back to the decision; the person is the policy person with the ID token's email, or (groups from the provider) a
member of a group the policy names.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from tests.approvals.support import PERSON_TOKENS, approval_policy, wait_for_decisions
from tests.dashboard.test_dashboard_browser import TIMEOUT_MS
from tests.support.harness import Gateway, free_port, run_gateway, servers, text_of
from tests.support.oidc_provider import DASHBOARD_CLIENT, Provider, oidc_provider

pytestmark = pytest.mark.usefixtures("node_available")


def sso_policy(**approval: Any) -> dict[str, Any]:
    """alice and bob are declared with their addresses; carol is declared without one (the provider's carol is
    known only by her group); the rule asks group ops."""
    policy = approval_policy(**approval)
    policy["people"]["alice"]["email"] = "alice@example.com"
    policy["people"]["bob"]["email"] = "bob@example.com"
    return policy


@asynccontextmanager
async def sso_gateway(
    tmp_path, *, token_sign_in: bool = True, oidc_provider_logout: bool = True, **approval: Any
) -> AsyncIterator[tuple[Gateway, Provider]]:
    port = free_port()
    async with (
        oidc_provider([f"http://127.0.0.1:{port}/login/oidc/callback"]) as provider,
        run_gateway(
            tmp_path,
            policy=sso_policy(**approval),
            servers=servers(tmp_path),
            port=port,
            public_url=f"http://127.0.0.1:{port}",
            oidc_issuer=provider.issuer,
            oidc_client_id=DASHBOARD_CLIENT[0],
            oidc_client_secret=DASHBOARD_CLIENT[1],
            oidc_scopes="openid email profile groups",
            oidc_groups_claim="groups",
            token_sign_in=token_sign_in,
            oidc_provider_logout=oidc_provider_logout,
            approval_hold_s=30,
        ) as gw,
    ):
        yield gw, provider


@asynccontextmanager
async def browser_page(executable) -> AsyncIterator[Any]:
    """A fresh page that reaches only this machine: 127.0.0.1, and `localhost` (an MCP client's loopback redirect)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(executable), headless=True)
        try:
            context = await browser.new_context()
            offline = re.compile(r"^https?://(?!(127\.0\.0\.1|localhost)[:/])")  # this machine only
            await context.route(offline, lambda route: route.abort())
            page = await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
            await context.close()
        finally:
            await browser.close()


async def sign_in_at_provider(page: Any, account: str) -> None:
    """The provider's own login form (any password) and its consent screen."""
    await page.fill('input[name="login"]', account)
    await page.fill('input[name="password"]', "any password")
    await page.click("button[type=submit]")
    await page.click("button:has-text('Continue')")


async def test_a_decision_link_asks_for_sign_in_at_the_provider_then_shows_the_decision(tmp_path, chromium):
    from playwright.async_api import expect

    async with (
        sso_gateway(tmp_path) as (gw, provider),
        gw.session("jobs") as session,
        browser_page(chromium) as page,
    ):
        held = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-7"}))
        [decision] = await wait_for_decisions(gw)
        link = f"{gw.url}/decisions/{decision.id}"  # what Slack and email link to

        await page.goto(link)
        assert urlsplit(page.url).path == "/login"
        await page.get_by_test_id("oidc-sign-in").click()
        await page.wait_for_url(re.compile(re.escape(provider.issuer)))
        await sign_in_at_provider(page, "alice")

        await page.wait_for_url(link)
        await expect(page.get_by_test_id("person")).to_have_text("alice")
        await expect(page.locator("main")).to_contain_text("job-7")
        await page.get_by_role("button", name="Approve").click()
        await expect(page.locator("main")).to_contain_text("by alice via dashboard")
        result = await asyncio.wait_for(held, 20)
        assert "Job job-7 not found" in text_of(result)  # the upstream's own answer: the call ran

        # Sign out: the session cookie stops working (a copy of it too), and the provider's session ends as well
        # (RP-initiated logout: its confirmation page, then back to holdgate's login page).
        cookies = await page.context.cookies()
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(re.compile(re.escape(provider.issuer) + "/session/end"))
        await page.click("button[value=yes]")
        await page.wait_for_url(f"{gw.url}/login")
        async with httpx2.AsyncClient(base_url=gw.url, cookies={c["name"]: c["value"] for c in cookies}) as copy:
            assert (await copy.get("/")).status_code == 303
        await page.get_by_test_id("oidc-sign-in").click()
        await expect(page.locator('input[name="login"]')).to_be_visible()  # asked again: not signed back in


async def test_signing_out_stays_at_holdgate_when_provider_logout_is_off(tmp_path, chromium):
    """`HOLDGATE_OIDC_PROVIDER_LOGOUT=false` (a provider that insists on `id_token_hint`): holdgate's session
    ends, the provider's does not, so signing in again goes straight through the provider."""
    from playwright.async_api import expect

    async with sso_gateway(tmp_path, oidc_provider_logout=False) as (gw, _provider), browser_page(chromium) as page:
        await page.goto(f"{gw.url}/login")
        await page.get_by_test_id("oidc-sign-in").click()
        await sign_in_at_provider(page, "alice")
        await expect(page.get_by_test_id("person")).to_have_text("alice")
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(f"{gw.url}/login")
        await page.get_by_test_id("oidc-sign-in").click()
        await expect(page.get_by_test_id("person")).to_have_text("alice")  # the provider's session signed her in


async def test_a_member_of_a_policy_group_at_the_provider_votes_as_themself(tmp_path, chromium):
    from playwright.async_api import expect

    async with (
        sso_gateway(tmp_path) as (gw, _),
        gw.session("jobs") as session,
        browser_page(chromium) as page,
    ):
        held = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-8"}))
        [decision] = await wait_for_decisions(gw)
        await page.goto(f"{gw.url}/decisions/{decision.id}")
        await page.get_by_test_id("oidc-sign-in").click()
        await sign_in_at_provider(page, "carol")  # the policy's carol has no address; the provider's is in ops
        await expect(page.get_by_test_id("person")).to_have_text("carol@example.com")
        await page.get_by_role("button", name="Approve").click()
        await expect(page.locator("main")).to_contain_text("by carol@example.com via dashboard")
        await asyncio.wait_for(held, 20)


async def test_someone_in_no_policy_group_is_refused_saying_what_the_policy_lacks(tmp_path, chromium):
    from playwright.async_api import expect

    async with sso_gateway(tmp_path) as (gw, _), browser_page(chromium) as page:
        await page.goto(f"{gw.url}/history")
        await page.get_by_test_id("oidc-sign-in").click()
        await sign_in_at_provider(page, "mallory")
        await expect(page.get_by_test_id("sign-in-error")).to_contain_text(
            "You signed in as mallory@example.com, but no person in the policy has that email"
        )
        assert (await page.goto(f"{gw.url}/history")) is not None
        assert urlsplit(page.url).path == "/login"  # still nobody


async def test_with_token_sign_in_off_the_login_page_goes_straight_to_the_provider(tmp_path):
    async with sso_gateway(tmp_path, token_sign_in=False) as (gw, provider):
        async with httpx2.AsyncClient(base_url=gw.url) as http:
            login = await http.get("/login?next=/history")
            assert login.status_code == 303 and login.headers["location"] == "/login/oidc?next=%2Fhistory"
            started = await http.get(login.headers["location"])
            assert started.status_code == 303
            where = urlsplit(started.headers["location"])
            asked = parse_qs(where.query)
            assert f"{where.scheme}://{where.netloc}" == provider.issuer
            assert asked["code_challenge_method"] == ["S256"] and asked["code_challenge"][0]
            assert asked["state"][0] and asked["nonce"][0]
            assert asked["redirect_uri"] == [f"{gw.url}/login/oidc/callback"]
            cookie = started.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/login/oidc/callback" in cookie
            # A token no longer signs in.
            refused = await http.post("/login", data={"token": PERSON_TOKENS["alice"], "csrf": "x", "next": "/"})
            assert refused.status_code == 403 and "Token sign-in is off" in refused.text


async def test_a_callback_with_another_state_or_without_its_cookie_signs_nobody_in(tmp_path):
    async with sso_gateway(tmp_path) as (gw, _):
        async with httpx2.AsyncClient(base_url=gw.url) as http:
            started = await http.get("/login/oidc?next=/")
            state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
            forged = await http.get("/login/oidc/callback", params={"code": "x", "state": state + "x"})
            assert forged.status_code == 401 and "state does not match" in forged.text
            assert (await http.get("/")).status_code == 303  # still signed out
        async with httpx2.AsyncClient(base_url=gw.url) as stranger:  # no sign-in cookie at all
            response = await stranger.get("/login/oidc/callback", params={"code": "x", "state": state})
            assert response.status_code == 400 and "not started here" in response.text
