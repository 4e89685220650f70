"""Dashboard sign-in is throttled after repeated failures, and signing out revokes the cookie, copies included."""

from __future__ import annotations

import time

import httpx2

from tests.approvals.support import PERSON_TOKENS, approval_policy
from tests.dashboard.support import browser, csrf_of, sign_in
from tests.support.harness import Clock, run_gateway

SECRET = "one key for every replica, long enough"


async def attempt(client: httpx2.AsyncClient, token: str, address: str = "127.0.0.1") -> httpx2.Response:
    """One sign-in as from `address` (uvicorn takes X-Forwarded-For from a trusted local proxy)."""
    headers = {"x-forwarded-for": address}
    page = await client.get("/login", headers=headers)
    return await client.post("/login", data={"token": token, "csrf": csrf_of(page.text), "next": "/"}, headers=headers)


async def test_five_failures_from_one_address_throttle_it_for_five_minutes(tmp_path, database):
    clock = Clock(time.time())
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}, clock=clock, **database) as gw:
        async with browser(gw) as client:
            for guess in range(5):
                refused = await attempt(client, f"guess-{guess}", "198.51.100.7")
                assert refused.status_code == 401, guess
                clock.now += 10
            throttled = await attempt(client, PERSON_TOKENS["alice"], "198.51.100.7")
            assert throttled.status_code == 429, "even the right token waits: otherwise guessing goes on"
            assert int(throttled.headers["retry-after"]) == 300 - 50
            assert f"try again in {300 - 50} s" in throttled.text

            other = await attempt(client, PERSON_TOKENS["bob"], "198.51.100.8")
            assert other.status_code == 303, "another address is not affected"
            client.cookies.clear()  # bob's session: back to an anonymous browser

            clock.now += 300 - 50  # the first failure leaves the window: 4 remain
            assert (await attempt(client, PERSON_TOKENS["alice"], "198.51.100.7")).status_code == 303


async def test_failures_with_one_token_prefix_throttle_it_from_every_address(tmp_path):
    clock = Clock(time.time())
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}, clock=clock) as gw, browser(gw) as client:
        prefix = PERSON_TOKENS["alice"][:8]
        for guess in range(5):  # a spread-out guess of alice's token's ending
            assert (await attempt(client, f"{prefix}-guess-{guess}", f"203.0.113.{guess}")).status_code == 401
        throttled = await attempt(client, PERSON_TOKENS["alice"], "203.0.113.99")
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) == 300
        assert (await attempt(client, PERSON_TOKENS["bob"], "203.0.113.98")).status_code == 303, "other tokens pass"


async def test_signing_out_revokes_the_cookie_on_every_replica(tmp_path, database):
    url = database.get("database_url") or f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    settings = {"database_url": url, "secret_key": SECRET}
    async with (
        run_gateway(tmp_path / "one", policy=approval_policy(), servers={}, **settings) as one,
        run_gateway(tmp_path / "two", policy=approval_policy(), servers={}, grants=[], **settings) as two,
        browser(one) as client,
    ):
        csrf = await sign_in(client, "alice")
        copied = client.cookies["holdgate_session"]
        async with httpx2.AsyncClient(base_url=two.url, cookies={"holdgate_session": copied}) as elsewhere:
            assert (await elsewhere.get("/")).status_code == 200, "the session works on the other replica"

            signed_out = await client.post("/logout", data={"csrf": csrf})
            assert signed_out.status_code == 303 and signed_out.headers["location"] == "/login"

            for replica in (client, elsewhere):
                replica.cookies.set("holdgate_session", copied)
                again = await replica.get("/history")
                assert again.status_code == 303, "a copy of the signed-out cookie no longer works"
                assert again.headers["location"].startswith("/login")

        assert (await client.get("/")).status_code == 303
        await sign_in(client, "alice")  # signing in again makes a new session
        assert (await client.get("/")).status_code == 200
