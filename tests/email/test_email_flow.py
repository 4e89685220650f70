"""Email approvals end to end: a held MCP call, a real SMTP exchange (aiosmtpd), a person's browser."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from bots.email.links import LinkClaim, LinkSigner
from service.models import OutboxMessage
from tests.approvals.support import api, decisions, wait_for_decisions
from tests.email.support import (
    EMAILS,
    SECRET,
    SENDER,
    SmtpSink,
    browser_headers,
    confirm,
    csrf_of,
    email_gateway,
    email_policy,
    open_link,
    subject,
    submit,
)
from tests.support.harness import Clock, executed_calls, free_port, text_of


def cancels(tmp_path) -> list[dict]:
    return [c for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


@pytest.fixture
def smtp():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


async def outbox_settled(gw) -> None:
    """Wait until the outbox has nothing left to send (sent or failed for good)."""
    for _ in range(500):
        async with gw.state.sessions() as session:
            left = await session.scalar(
                select(OutboxMessage.id).where(OutboxMessage.sent_at.is_(None), OutboxMessage.failed_at.is_(None))
            )
        if left is None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the outbox did not settle")


async def test_request_reaches_each_approver_with_their_own_links_and_all_the_facts(tmp_path, smtp):
    policy = email_policy()
    policy["redact"] = ["jobId"]
    async with (
        email_gateway(tmp_path, smtp.port, policy=policy) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-secret-42"}))
        [decision] = await wait_for_decisions(gw)
        mails = await smtp.wait_for(2)
        call.cancel()

    by_recipient = {tuple(m.rcpt_tos): m for m in mails}
    assert set(by_recipient) == {(EMAILS["alice"],), (EMAILS["bob"],)}, "one message per approver, to them alone"
    alice, bob = by_recipient[(EMAILS["alice"],)], by_recipient[(EMAILS["bob"],)]
    for mail in (alice, bob):
        message = mail.message
        assert mail.mail_from == "holdgate@gateway.example"
        assert message["From"] == SENDER
        assert message.get_content_type() == "multipart/alternative"
        assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
        assert subject(mail) == f"[holdgate] Approval needed: jobs/cancel-async-job by agent ({decision.id})"
        assert message["Message-ID"].startswith(f"<{decision.id}.request.")
        assert message["Auto-Submitted"] == "auto-generated"
        for body in (mail.text, mail.html):
            assert "agent" in body and "jobs" in body and "cancel-async-job" in body
            assert "Rule" in body and decision.rule in body
            assert decision.expires_at in body
            assert "jobId" in body and "[redacted]" in body
            assert "job-secret-42" not in body, "arguments are redacted as the policy says"
        links = mail.links()
        assert set(links) == {"approve", "deny"}
        for url in links.values():
            assert url.startswith(f"{gw.url}/email/decide/")
            assert f'href="{url}"' in mail.html
    assert alice.links() != bob.links(), "each approver has their own links"
    assert alice.message["Message-ID"] != bob.message["Message-ID"]
    assert "alice, the agent" in alice.text and "bob, the agent" in bob.text


async def test_opening_links_changes_nothing_and_confirming_releases_the_call(tmp_path, smtp):
    async with (
        email_gateway(tmp_path, smtp.port) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-1"}))
        [decision] = await wait_for_decisions(gw)
        [request] = await smtp.wait_for(1, lambda m: m.rcpt_tos == [EMAILS["alice"]])
        links = request.links()

        pages = [await open_link(links["approve"]) for _ in range(3)] + [await open_link(links["deny"])]
        [still] = await decisions(gw)
        assert still.status == "pending" and still.votes == [], "a GET (a mail scanner) decides nothing"
        assert not call.done() and cancels(tmp_path) == []

        done = await confirm(gw, links["approve"])
        result = await asyncio.wait_for(call, 10)
        replay = await submit(links["approve"], csrf=csrf_of(pages[0].text), headers=browser_headers(gw))
        replay_deny = await submit(links["deny"], csrf=csrf_of(pages[3].text), reason="no", headers=browser_headers(gw))
        after_replay = (await gw.state.approvals.service.get(decision.id))[1]
        followups = await smtp.wait_for(2, lambda m: m.message["In-Reply-To"] is not None)
        await outbox_settled(gw)
        view = (await api(gw, "GET", f"/api/decisions/{decision.id}", "alice")).json()

    for page in pages:
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "cancel-async-job" in page.text and decision.expires_at in page.text
    assert "Approve this call as alice" in pages[0].text
    assert 'name="reason"' in pages[3].text and "Deny this call as alice" in pages[3].text

    assert done.status_code == 200, done.text
    assert "Approved by alice via email" in done.text
    assert "Job job-1" in text_of(result) and "holdgate" not in text_of(result), "the upstream's own result"
    assert len(cancels(tmp_path)) == 1, "released exactly once"

    assert replay.status_code == 409 and "Approved by alice via email" in replay.text
    assert replay_deny.status_code == 409
    assert [(v.approver, v.value, v.via) for v in after_replay] == [("alice", "approve", "email")]
    assert view["status"] == "approved" and view["decided_via"] == "email"

    # One follow-up per approver, threaded under the request each of them got.
    followed_up = sorted(m.rcpt_tos[0] for m in smtp.received if m.message["In-Reply-To"])
    assert followed_up == sorted([EMAILS["alice"], EMAILS["bob"]])
    for followup in followups:
        [original] = smtp.to(followup.rcpt_tos[0])[:1]
        assert followup.message["In-Reply-To"] == original.message["Message-ID"]
        assert followup.message["References"] == original.message["Message-ID"]
        assert subject(followup) == "Re: " + subject(original)
        assert "Approved by alice via email" in followup.text and "Approved by alice via email" in followup.html


async def test_deny_needs_a_reason_and_the_agent_is_told_it(tmp_path, smtp):
    async with (
        email_gateway(tmp_path, smtp.port) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-2"}))
        [decision] = await wait_for_decisions(gw)
        [request] = await smtp.wait_for(1, lambda m: m.rcpt_tos == [EMAILS["bob"]])
        deny = request.links()["deny"]
        page = await open_link(deny)
        blank = await submit(deny, csrf=csrf_of(page.text), reason="   ", headers=browser_headers(gw))
        [still] = await decisions(gw)
        denied = await submit(deny, csrf=csrf_of(blank.text), reason="job still needed", headers=browser_headers(gw))
        result = await asyncio.wait_for(call, 10)
        followups = await smtp.wait_for(2, lambda m: m.message["In-Reply-To"] is not None)

    assert blank.status_code == 422 and "A reason is required" in blank.text
    assert still.status == "pending" and still.votes == []
    assert denied.status_code == 200 and "Denied by bob via email" in denied.text
    assert result.is_error
    assert "denied by bob" in text_of(result) and "job still needed" in text_of(result)
    assert cancels(tmp_path) == []
    assert all("Denied by bob via email. Reason: job still needed" in m.text for m in followups)
    assert decision.id in followups[0].text


async def test_tampered_foreign_cross_decision_and_cross_site_requests_change_nothing(tmp_path, smtp):
    async with (
        email_gateway(tmp_path, smtp.port) as gw,
        gw.session("jobs") as first,
        gw.session("jobs") as second,
    ):
        calls = [
            asyncio.create_task(first.call_tool("cancel-async-job", {"jobId": "job-a"})),
            asyncio.create_task(second.call_tool("cancel-async-job", {"jobId": "job-b"})),
        ]
        pending = await wait_for_decisions(gw, 2)
        await smtp.wait_for(4)
        by_decision = {
            d.id: {r.rcpt_tos[0]: r.links() for r in smtp.received if r.message["X-Holdgate-Decision"] == d.id}
            for d in pending
        }
        (a_id, a_links), (_, b_links) = sorted(by_decision.items())
        approve_a, approve_b = a_links[EMAILS["alice"]]["approve"], b_links[EMAILS["alice"]]["approve"]
        csrf_a = csrf_of((await open_link(approve_a)).text)
        csrf_b = csrf_of((await open_link(approve_b)).text)
        base, token_a = approve_a.rsplit("/", 1)
        decision_a = next(d for d in pending if d.id == a_id)
        expires = time.time() + 600

        tampered_token = token_a[:10] + ("A" if token_a[10] != "A" else "B") + token_a[11:]
        foreign_token = LinkSigner("another-gateways-secret-key-000000").sign(
            LinkClaim(a_id, EMAILS["alice"], "approve", expires)
        )
        ours = LinkSigner(SECRET)
        carol_token = ours.sign(LinkClaim(a_id, EMAILS["carol"], "approve", expires))
        unknown_token = ours.sign(LinkClaim("d_unknown", EMAILS["alice"], "approve", expires))
        tampered, foreign = f"{base}/{tampered_token}", f"{base}/{foreign_token}"
        results = {
            "tampered GET": await open_link(tampered),
            "tampered POST": await submit(tampered, csrf=csrf_a, headers=browser_headers(gw)),
            "foreign GET": await open_link(foreign),
            "foreign POST": await submit(foreign, csrf=csrf_a, headers=browser_headers(gw)),
            "B's form on A's link": await submit(approve_a, csrf=csrf_b, headers=browser_headers(gw)),
            "A's form on B's link": await submit(approve_b, csrf=csrf_a, headers=browser_headers(gw)),
            "no form token": await submit(approve_a, csrf=None, headers=browser_headers(gw)),
            "another site": await submit(
                approve_a, csrf=csrf_a, headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
            ),
            "same-site sibling": await submit(approve_a, csrf=csrf_a, headers={"Sec-Fetch-Site": "same-site"}),
            "not an approver GET": await open_link(f"{base}/{carol_token}"),
            "not an approver POST": await submit(
                f"{base}/{carol_token}",
                csrf=ours.form_token(carol_token),
                headers=browser_headers(gw),
            ),
            "unknown decision": await open_link(f"{base}/{unknown_token}"),
        }
        after = await decisions(gw)
        votes = [v for d in after for v in (await gw.state.approvals.service.get(d.id))[1]]
        for call in calls:
            call.cancel()

    statuses = {name: response.status_code for name, response in results.items()}
    assert statuses == {
        "tampered GET": 400,
        "tampered POST": 400,
        "foreign GET": 400,
        "foreign POST": 400,
        "B's form on A's link": 403,
        "A's form on B's link": 403,
        "no form token": 403,
        "another site": 403,
        "same-site sibling": 403,
        "not an approver GET": 403,
        "not an approver POST": 403,
        "unknown decision": 404,
    }
    assert "this link is not valid" in results["tampered GET"].text
    assert "not made for this link" in results["B's form on A's link"].text
    assert "did not come from the confirmation page" in results["another site"].text
    assert "not an approver" in results["not an approver POST"].text
    for response in results.values():
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert 'name="csrf"' not in response.text, "no page offers a form to submit"
    assert [d.status for d in after] == ["pending", "pending"] and votes == []
    assert decision_a.id == a_id and cancels(tmp_path) == []


async def test_an_expired_link_shows_so_and_decides_nothing(tmp_path, smtp):
    clock = Clock(time.time())
    async with (
        # A long sweep interval keeps the decision pending: the link's own expiry must refuse it.
        email_gateway(tmp_path, smtp.port, clock=clock, approval_sweep_interval_s=3600) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-3"}))
        [decision] = await wait_for_decisions(gw)
        [request] = await smtp.wait_for(1, lambda m: m.rcpt_tos == [EMAILS["alice"]])
        approve = request.links()["approve"]
        page = await open_link(approve)
        clock.now += 15 * 60 + 1
        expired_get = await open_link(approve)
        expired_post = await submit(approve, csrf=csrf_of(page.text), headers=browser_headers(gw))
        [still] = await decisions(gw)
        votes = (await gw.state.approvals.service.get(decision.id))[1]
        call.cancel()

    assert page.status_code == 200
    assert expired_get.status_code == 410 and expired_post.status_code == 410
    assert "This link expired with its decision" in expired_post.text
    assert 'name="csrf"' not in expired_get.text
    assert still.status == "pending" and votes == [] and cancels(tmp_path) == []


async def test_smtp_outage_delays_the_request_and_loses_nothing(tmp_path):
    sink = SmtpSink(port=free_port())  # nothing listens there yet
    try:
        async with (
            email_gateway(tmp_path, sink.port, outbox_retry_base_s=0.1) as gw,
            gw.session("jobs") as session,
        ):
            call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-4"}))
            [decision] = await wait_for_decisions(gw)
            for _ in range(500):
                async with gw.state.sessions() as db:
                    failed = await db.scalar(
                        select(OutboxMessage).where(OutboxMessage.channel == "email", OutboxMessage.attempts >= 1)
                    )
                if failed is not None:
                    break
                await asyncio.sleep(0.02)
            assert failed is not None and failed.sent_at is None and failed.failed_at is None
            assert "Connect" in failed.last_error or "refused" in failed.last_error.lower()

            sink.start()  # the mail server is back
            mails = await sink.wait_for(2)
            done = await confirm(gw, next(m for m in mails if m.rcpt_tos == [EMAILS["alice"]]).links()["approve"])
            await asyncio.wait_for(call, 10)
    finally:
        sink.stop()

    assert {m.rcpt_tos[0] for m in mails} == {EMAILS["alice"], EMAILS["bob"]}
    assert all(m.message["X-Holdgate-Decision"] == decision.id for m in mails)
    assert done.status_code == 200
    assert len(cancels(tmp_path)) == 1


async def test_a_decision_made_elsewhere_is_followed_up_once_in_the_thread(tmp_path, smtp):
    async with (
        email_gateway(tmp_path, smtp.port) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-5"}))
        [decision] = await wait_for_decisions(gw)
        requests = await smtp.wait_for(2)
        approved = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        await asyncio.wait_for(call, 10)
        await smtp.wait_for(2, lambda m: m.message["In-Reply-To"] is not None)
        await outbox_settled(gw)  # the second update (the released call's outcome) has been handled too
        late = await open_link(next(m for m in requests if m.rcpt_tos == [EMAILS["bob"]]).links()["approve"])
        [again] = await decisions(gw, status="approved")

    assert approved.status_code == 200
    followups = [m for m in smtp.received if m.message["In-Reply-To"] is not None]
    assert len(followups) == 2, "one follow-up per approver, not one per update"
    for followup in followups:
        [original] = [r for r in requests if r.rcpt_tos == followup.rcpt_tos]
        assert followup.message["In-Reply-To"] == original.message["Message-ID"]
        assert "Approved by alice via api" in followup.text
    assert late.status_code == 200 and "Already decided" in late.text and "Approved by alice via api" in late.text
    assert again.decided_by == "alice" and len(cancels(tmp_path)) == 1


async def test_with_a_quorum_of_two_each_approver_counts_once(tmp_path, smtp):
    async with (
        email_gateway(tmp_path, smtp.port, policy=email_policy(quorum=2)) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-6"}))
        await wait_for_decisions(gw)
        mails = {m.rcpt_tos[0]: m.links() for m in await smtp.wait_for(2)}
        deny_page = await open_link(mails[EMAILS["alice"]]["deny"])  # opened, left open, used later
        first = await confirm(gw, mails[EMAILS["alice"]]["approve"])
        reopened = await open_link(mails[EMAILS["alice"]]["approve"])
        twice = await submit(
            mails[EMAILS["alice"]]["approve"],
            csrf=csrf_of((await open_link(mails[EMAILS["bob"]]["approve"])).text),
            headers=browser_headers(gw),
        )
        twice_own_form = await submit(
            mails[EMAILS["alice"]]["deny"],
            csrf=csrf_of(deny_page.text),
            reason="changed my mind",
            headers=browser_headers(gw),
        )
        assert not call.done() and cancels(tmp_path) == []
        second = await confirm(gw, mails[EMAILS["bob"]]["approve"])
        await asyncio.wait_for(call, 10)

    assert first.status_code == 200 and "1 more needed" in first.text
    assert reopened.status_code == 200 and "already voted approve" in reopened.text
    assert twice.status_code == 403, "bob's form does not fit alice's link"
    assert twice_own_form.status_code == 409 and "already voted" in twice_own_form.text
    assert second.status_code == 200 and "Approved by alice, bob via email" in second.text
    assert len(cancels(tmp_path)) == 1
