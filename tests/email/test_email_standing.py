"""A standing approval given from the email confirmation page: the page offers "Approve for" where the rule
allows it, a forged longer choice is refused with nothing changed, and the chosen one covers the next call."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from tests.approvals.support import decisions, wait_for_decisions
from tests.email.support import EMAILS, SmtpSink, browser_headers, csrf_of, email_gateway, email_policy, open_link
from tests.support.harness import executed_calls, text_of


@pytest.fixture
def smtp():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


async def post_form(url: str, data: dict[str, str], headers: dict[str, str]) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30) as client:
        return await client.post(url, data=data, headers=headers)


async def test_the_confirmation_page_gives_a_standing_approval(tmp_path, smtp):
    policy = email_policy(scopes={"same_args": "2h"})
    async with email_gateway(tmp_path, smtp.port, policy=policy) as gw, gw.session("jobs") as session:
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "mail-1"}))
        [decision] = await wait_for_decisions(gw)
        [request] = await smtp.wait_for(1, lambda m: m.rcpt_tos == [EMAILS["alice"]])
        link = request.links()["approve"]
        page = await open_link(link)
        csrf = csrf_of(page.text)

        forged = await post_form(link, {"csrf": csrf, "standing": "same_args|86400"}, browser_headers(gw))
        [still] = await decisions(gw)
        given = await post_form(link, {"csrf": csrf, "standing": "same_args|7200.0"}, browser_headers(gw))
        await asyncio.wait_for(call, 10)
        before = len(await decisions(gw))
        covered = await asyncio.wait_for(session.call_tool("cancel-async-job", {"jobId": "mail-1"}), 10)
        after = len(await decisions(gw))
        [standing_view] = [d for d in await decisions(gw) if d.id == decision.id]

    assert page.status_code == 200 and 'name="standing"' in page.text
    assert "later identical calls of agent for 2h" in page.text
    assert forged.status_code == 422 and "may last at most 2h" in forged.text
    assert still.status == "pending" and still.votes == [], "the refused choice recorded nothing"
    assert given.status_code == 200, given.text
    assert standing_view.standing_id is not None
    assert "holdgate" not in text_of(covered) and after == before
    assert [c["arguments"]["jobId"] for c in executed_calls(tmp_path)] == ["mail-1", "mail-1"]
