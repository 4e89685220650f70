"""Webhook notifications end to end: a held MCP call, a real receiver, a decision taken through the REST API."""

from __future__ import annotations

import asyncio
import logging

import httpx2
from sqlalchemy import select

from service.models import OutboxMessage
from tests.approvals.support import PERSON_TOKENS, api, wait_for_decisions
from tests.support.harness import executed_calls, text_of
from tests.webhook.receiver import Answer, Receiver
from tests.webhook.support import SECRET, verified, webhook_gateway


def cancels(tmp_path) -> list[dict]:
    return [c for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


def event(name: str):
    return lambda r: r.json()["event"] == name


async def outbox_rows(gw) -> list[OutboxMessage]:
    async with gw.state.sessions() as session:
        return list(await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


async def test_request_then_approve_through_rest_releases_the_call_and_the_receiver_hears_the_ending(
    tmp_path, receiver: Receiver
):
    async with webhook_gateway(tmp_path, receiver.url) as gw, gw.session("jobs") as session:
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "hook-1"}))
        [decision] = await wait_for_decisions(gw)
        [request] = await receiver.wait_for(1, event("request"))
        body = request.json()
        assert not call.done(), "still held: the webhook only tells, it decides nothing"

        # The receiver (a bot, a ticket system) decides through the REST API, with a person's token.
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {PERSON_TOKENS['alice']}"}) as rest:
            approved = await rest.post(body["links"]["approve"], json={})
        result = await asyncio.wait_for(call, 10)
        [ended] = await receiver.wait_for(1, lambda r: event("update")(r) and r.json()["decision"]["execution"])
        view = (await api(gw, "GET", f"/api/decisions/{decision.id}", "alice")).json()

    assert verified(request)
    assert request.headers["X-Holdgate-Event"] == "request"
    assert body["decision"]["id"] == decision.id and body["decision"]["status"] == "pending"
    assert body["decision"]["arguments"] == {"jobId": "hook-1"}
    assert body["decision"]["approvers"] == ["alice", "bob"]
    assert body["links"] == {
        "decision": f"{gw.url}/api/decisions/{decision.id}",
        "approve": f"{gw.url}/api/decisions/{decision.id}/approve",
        "deny": f"{gw.url}/api/decisions/{decision.id}/deny",
        "dashboard": f"{gw.url}/decisions/{decision.id}",
    }
    assert approved.status_code == 200, approved.text
    assert approved.json()["decided"] is True
    assert "Job hook-1" in text_of(result)
    assert len(cancels(tmp_path)) == 1, "released exactly once"

    updates = [r for r in receiver.received if r.json()["event"] == "update"]
    assert all(verified(u) for u in updates)
    assert all(u.json()["request_delivery"] == request.headers["X-Holdgate-Delivery"] for u in updates)
    assert [u.json()["decision"]["status"] for u in updates] == ["approved"] * len(updates)
    final = ended.json()["decision"]
    assert final["decided_by"] == "alice" and final["decided_via"] == "api"
    assert final["released"] is True and final["execution"]["outcome"] in ("ok", "tool_error")  # the upstream's own
    assert final == {**view, "state": final["state"]}, "the body is what GET /api/decisions/{id} says"
    by_id = {(r.headers["X-Holdgate-Delivery"], r.body) for r in receiver.received}
    assert len(by_id) == len({delivery for delivery, _ in by_id}), "one delivery id, one body"


async def test_deny_through_rest_reaches_the_agent_and_the_receiver(tmp_path, receiver: Receiver):
    async with webhook_gateway(tmp_path, receiver.url) as gw, gw.session("jobs") as session:
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "hook-2"}))
        await wait_for_decisions(gw)
        [request] = await receiver.wait_for(1, event("request"))
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {PERSON_TOKENS['bob']}"}) as rest:
            denied = await rest.post(request.json()["links"]["deny"], json={"reason": "job still needed"})
        result = await asyncio.wait_for(call, 10)
        [update] = await receiver.wait_for(1, event("update"))

    assert denied.status_code == 200, denied.text
    assert result.is_error and "job still needed" in text_of(result)
    assert cancels(tmp_path) == []
    ending = update.json()["decision"]
    assert (ending["status"], ending["decided_by"], ending["reason"]) == ("denied", "bob", "job still needed")
    assert verified(update)


async def test_a_500_is_retried_by_the_outbox_with_the_same_delivery_id_and_no_secret_in_its_records(tmp_path, caplog):
    async with Receiver(path="/hooks/T0KEN-in-the-path") as receiver:
        receiver.answer(Answer(500), Answer(500))
        url = receiver.url.replace("http://", "http://hook:pa55word@") + "?key=query-secret"
        with caplog.at_level(logging.INFO):
            async with (
                webhook_gateway(tmp_path, url, outbox_retry_base_s=0.1) as gw,
                gw.session("jobs") as session,
            ):
                call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "hook-3"}))
                [decision] = await wait_for_decisions(gw)
                tries = await receiver.wait_for(3, event("request"))
                for _ in range(200):
                    [row] = [r for r in await outbox_rows(gw) if r.kind == "request"]
                    if row.sent_at is not None:
                        break
                    await asyncio.sleep(0.02)
                [still] = await wait_for_decisions(gw)
                call.cancel()

    assert [t.headers["X-Holdgate-Delivery"] for t in tries] == [tries[0].headers["X-Holdgate-Delivery"]] * 3
    assert len({t.body for t in tries}) == 1, "the same notification each time"
    assert all(verified(t) for t in tries)
    assert all(t.headers["Authorization"].startswith("Basic ") for t in tries)
    assert row.sent_at is not None and row.attempts == 3 and row.failed_at is None
    assert row.channel_ref == tries[0].headers["X-Holdgate-Delivery"]
    assert "HTTP 500" in (row.last_error or "")
    assert still.id == decision.id and still.status == "pending", "a failing receiver decides nothing"
    recorded = [row.last_error or "", caplog.text]
    for text in recorded:
        for secret in ("pa55word", "T0KEN-in-the-path", "query-secret", SECRET):
            assert secret not in text, f"{secret!r} in {text[:200]!r}"
    assert "webhook request failed (attempt 1" in caplog.text


async def test_a_receiver_that_hangs_is_retried_after_the_timeout_and_the_call_can_still_be_decided(
    tmp_path, receiver: Receiver, caplog
):
    receiver.answer(Answer(hang=True))
    async with (
        webhook_gateway(tmp_path, receiver.url, webhook={"timeout_s": 0.5}, outbox_retry_base_s=0.1) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "hook-4"}))
        [decision] = await wait_for_decisions(gw)
        hung, retried = await receiver.wait_for(2, event("request"))
        approved = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice", json={})
        await asyncio.wait_for(call, 10)
        await receiver.wait_for(1, event("update"))
        [row] = [r for r in await outbox_rows(gw) if r.kind == "request"]

    assert hung.headers["X-Holdgate-Delivery"] == retried.headers["X-Holdgate-Delivery"]
    assert verified(retried)
    assert approved.status_code == 200
    assert row.sent_at is not None and row.attempts >= 2
    assert "webhook request failed (attempt 1, retry in 0.1s): WebhookError: http://127.0.0.1:" in caplog.text
    assert "did not answer within 0.5s" in caplog.text


async def test_a_huge_call_is_notified_without_its_arguments_and_the_receiver_reads_them_from_the_api(
    tmp_path, receiver: Receiver
):
    job_id = "job-" + "x" * 300_000
    async with (
        webhook_gateway(tmp_path, receiver.url, webhook={"max_body_bytes": 65536}) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": job_id}))
        await wait_for_decisions(gw)
        [request] = await receiver.wait_for(1, event("request"))
        body = request.json()
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {PERSON_TOKENS['alice']}"}) as rest:
            full = (await rest.get(body["links"]["decision"])).json()
        call.cancel()

    assert len(request.body) <= 65536 and verified(request)
    assert body["omitted"] == ["arguments"] and "arguments" not in body["decision"]
    assert full["arguments"] == {"jobId": job_id}
    assert full["args_sha256"] == body["decision"]["args_sha256"]
