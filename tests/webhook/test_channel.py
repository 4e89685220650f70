"""The webhook channel against a real local receiver: what goes on the wire, and each way a receiver fails."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest

from bots.webhook import WebhookChannel, WebhookSettings, plugin
from bots.webhook.channel import WebhookError
from service.settings import Settings
from tests.webhook.receiver import Answer, Receiver
from tests.webhook.support import PUBLIC_URL, SECRET, a_decision, open_channel, verified


async def test_a_request_is_one_signed_json_post_with_the_decision_and_its_links(receiver: Receiver):
    decision = a_decision()
    before = int(time.time())
    async with open_channel(receiver.url) as channel:
        delivery = await channel.deliver("request", decision, None)

    [got] = receiver.received
    assert got.method == "POST" and got.path == "/hooks/holdgate"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"].startswith("holdgate-webhook/")
    assert verified(got), "the signature checks out with an HMAC computed independently"
    assert not verified(got, secret=SECRET + "x"), "and not with another secret"
    assert before <= int(got.headers["X-Holdgate-Timestamp"]) <= int(time.time())
    assert got.headers["X-Holdgate-Event"] == "request"
    assert got.headers["X-Holdgate-Delivery"] == delivery
    assert delivery == "d_AbC-123_xyz.request", "a decision has one request: its id names it"

    body = got.json()
    assert body["event"] == "request" and body["delivery"] == delivery
    assert body["request_delivery"] is None and body["omitted"] == []
    assert body["decision"] == decision.model_dump(mode="json"), "the decision as GET /api/decisions/{id} shows it"
    assert body["links"] == {
        "decision": f"{PUBLIC_URL}/api/decisions/d_AbC-123_xyz",
        "approve": f"{PUBLIC_URL}/api/decisions/d_AbC-123_xyz/approve",
        "deny": f"{PUBLIC_URL}/api/decisions/d_AbC-123_xyz/deny",
        "dashboard": f"{PUBLIC_URL}/decisions/d_AbC-123_xyz",
    }


async def test_updates_and_reminders_name_the_request_they_follow(receiver: Receiver):
    async with open_channel(receiver.url) as channel:
        request = await channel.deliver("request", a_decision(), None)
        reminder = await channel.deliver("reminder", a_decision(), request)
        update = await channel.deliver("update", a_decision(status="approved", decided_by="alice"), request)

    bodies = [r.json() for r in receiver.received]
    assert [b["event"] for b in bodies] == ["request", "reminder", "update"]
    assert [b["request_delivery"] for b in bodies] == [None, request, request]
    assert len({request, reminder, update}) == 3, "each notification has its own delivery id"
    assert bodies[2]["decision"]["status"] == "approved"
    assert all(verified(r) for r in receiver.received)


async def test_without_a_public_url_links_are_paths_on_holdgate(receiver: Receiver):
    settings = Settings(_env_file=None, channel_settings={"webhook": WebhookSettings(url=receiver.url, secret=SECRET)})
    channel = plugin.build(settings)
    assert channel is not None
    try:
        await channel.deliver("request", a_decision(), None)
    finally:
        assert isinstance(channel, WebhookChannel)
        await channel.aclose()
    assert receiver.received[0].json()["links"]["approve"] == "/api/decisions/d_AbC-123_xyz/approve"


@pytest.mark.parametrize("status", [500, 503, 404, 429])
async def test_a_refusal_raises_and_the_retry_carries_the_same_delivery_id(receiver: Receiver, status: int):
    receiver.answer(Answer(status))
    clock = iter([1_800_000_000.0, 1_800_000_042.0])
    async with open_channel(receiver.url) as channel:
        channel._clock = lambda: next(clock)
        with pytest.raises(WebhookError, match=f"answered HTTP {status}"):
            await channel.deliver("request", a_decision(), None)
        delivery = await channel.deliver("request", a_decision(), None)

    first, retry = receiver.received
    assert first.headers["X-Holdgate-Delivery"] == retry.headers["X-Holdgate-Delivery"] == delivery
    assert first.body == retry.body, "the same notification, byte for byte"
    assert (first.headers["X-Holdgate-Timestamp"], retry.headers["X-Holdgate-Timestamp"]) == (
        "1800000000",
        "1800000042",
    ), "a retry is signed afresh at its own time"
    assert verified(first) and verified(retry)


async def test_a_request_retried_after_the_decision_moved_on_keeps_its_id_an_update_says_what_changed(
    receiver: Receiver,
):
    receiver.answer(Answer(500), Answer(200), Answer(500))
    voted = a_decision(votes=[{"approver": "alice", "value": "approve", "via": "api", "at": "2026-12-02T00:01:00Z"}])
    approved = a_decision(status="approved", decided_by="alice")
    executed = a_decision(status="approved", decided_by="alice", execution={"outcome": "ok"}, released=True)
    async with open_channel(receiver.url) as channel:
        with pytest.raises(WebhookError):
            await channel.deliver("request", a_decision(), None)
        request = await channel.deliver("request", voted, None)
        with pytest.raises(WebhookError):
            await channel.deliver("update", approved, request)
        ending = await channel.deliver("update", approved, request)
        executed_once = await channel.deliver("update", executed, request)
        executed_twice = await channel.deliver("update", executed, request)

    tried, retried = receiver.received[:2]
    assert tried.headers["X-Holdgate-Delivery"] == retried.headers["X-Holdgate-Delivery"] == request
    assert retried.json()["decision"]["votes"], "the retry shows the decision as it is now"
    assert receiver.received[2].headers["X-Holdgate-Delivery"] == ending, "an unchanged update keeps its id"
    assert receiver.received[3].headers["X-Holdgate-Delivery"] == ending
    assert ending != executed_once, "an update that says something new has a new id"
    assert executed_once == executed_twice, "two updates saying the same thing share it (the receiver drops one)"
    assert ending.startswith("d_AbC-123_xyz.update.")


async def test_2xx_of_any_kind_is_delivered(receiver: Receiver):
    receiver.answer(Answer(202), Answer(204))
    async with open_channel(receiver.url) as channel:
        assert await channel.deliver("request", a_decision(), None)
        assert await channel.deliver("update", a_decision(status="denied"), None)


async def test_a_receiver_that_hangs_times_out_and_does_not_hold_up_the_next_notifications(receiver: Receiver):
    receiver.answer(Answer(hang=True))
    now = [0.0]
    async with open_channel(receiver.url, timeout_s=0.3) as channel:
        channel._monotonic = lambda: now[0]
        started = time.monotonic()
        with pytest.raises(WebhookError, match=r"did not answer within 0\.3s"):
            await channel.deliver("request", a_decision(), None)
        assert time.monotonic() - started < 3

        started = time.monotonic()
        for _ in range(20):  # the rest of an outbox batch
            with pytest.raises(WebhookError, match="not tried again"):
                await channel.deliver("request", a_decision(), None)
        assert time.monotonic() - started < 0.5, "refused at once, without waiting on the receiver again"
        assert len(receiver.received) == 1

        now[0] = 0.31  # the quiet time is over: tried again (and the receiver answers now)
        assert await channel.deliver("request", a_decision(), None)
    assert len(receiver.received) == 2


async def test_nobody_listening_raises_naming_the_origin_only(unused_port: int):
    url = f"http://hook:pa55word-x@127.0.0.1:{unused_port}/hooks/T0KEN-in-the-path?key=query-secret"
    async with open_channel(url) as channel:
        with pytest.raises(WebhookError) as refused:
            await channel.deliver("request", a_decision(), None)
    message = str(refused.value)
    assert message.startswith(f"cannot reach http://127.0.0.1:{unused_port}")
    for secret in ("pa55word-x", "T0KEN-in-the-path", "query-secret", "hook:"):
        assert secret not in message


async def test_a_redirect_is_not_followed(receiver: Receiver):
    async with Receiver(path="/elsewhere") as elsewhere:
        receiver.answer(Answer(307, {"Location": f"{elsewhere.url}?token=redirect-secret"}))
        async with open_channel(receiver.url) as channel:
            with pytest.raises(WebhookError) as refused:
                await channel.deliver("request", a_decision(), None)
        assert elsewhere.received == [], "the signed body went nowhere else"
    message = str(refused.value)
    assert "HTTP 307" in message and "redirects are not followed" in message
    assert f"to http://127.0.0.1:{elsewhere.port}" in message, "where it pointed, by origin"
    assert "redirect-secret" not in message and "/elsewhere" not in message
    assert len(receiver.received) == 1


async def test_a_huge_decision_leaves_out_the_arguments_and_stays_signed(receiver: Receiver, caplog):
    huge = a_decision(arguments={"blob": "x" * 3_000_000, "jobId": "job-7"})
    async with open_channel(receiver.url, max_body_bytes=65536) as channel:
        with caplog.at_level(logging.WARNING, logger="bots.webhook"):
            delivery = await channel.deliver("request", huge, None)

    [got] = receiver.received
    assert len(got.body) <= 65536
    assert verified(got)
    body = got.json()
    assert body["omitted"] == ["arguments"]
    assert "arguments" not in body["decision"]
    assert body["decision"]["args_sha256"] == huge.args_sha256, "what the receiver can check the full read against"
    assert body["links"]["decision"].endswith("/api/decisions/d_AbC-123_xyz")
    assert got.headers["X-Holdgate-Delivery"] == delivery
    assert "sent without arguments" in caplog.text


async def test_a_decision_huge_beyond_its_arguments_keeps_only_its_identity_and_standing(receiver: Receiver):
    huge = a_decision(rule_reason="r" * 200_000, arguments={"blob": "x" * 100_000})
    async with open_channel(receiver.url, max_body_bytes=8192) as channel:
        await channel.deliver("request", huge, None)
    body = receiver.received[0].json()
    assert len(receiver.received[0].body) <= 8192
    assert body["decision"]["id"] == huge.id and body["decision"]["status"] == "pending"
    assert "arguments" in body["omitted"] and "rule_reason" in body["omitted"]
    assert set(body["decision"]) | set(body["omitted"]) == set(huge.model_dump(mode="json"))


async def test_credentials_in_the_url_go_as_basic_auth_and_never_into_a_log(receiver: Receiver, caplog):
    url = receiver.url.replace("http://", "http://hook%40corp:pa55%2Fword@") + "/T0KEN-path?key=query-secret"
    receiver.answer(Answer(500))
    with caplog.at_level(logging.DEBUG):
        async with open_channel(url) as channel:
            with pytest.raises(WebhookError) as refused:
                await channel.deliver("request", a_decision(), None)
            await channel.deliver("request", a_decision(), None)
        shown = [str(refused.value), repr(channel), repr(channel.target), caplog.text]

    first, second = receiver.received
    assert first.path == "/hooks/holdgate/T0KEN-path?key=query-secret"
    for got in (first, second):
        assert got.headers["Authorization"] == "Basic " + base64.b64encode(b"hook@corp:pa55/word").decode()
    for text in shown:
        for secret in ("pa55", "hook%40corp", "hook@corp", "T0KEN-path", "query-secret", SECRET):
            assert secret not in text, f"{secret!r} shown in {text!r}"
    assert f"127.0.0.1:{receiver.port}" in caplog.text, "the receiver is named by its origin"


def test_the_settings_section_hides_the_url_and_the_secret():
    section = WebhookSettings(url="https://u:p4ss@hooks.example/T0KEN", secret=SECRET)
    for text in (repr(section), str(section), json.dumps(section.model_dump(mode="json"))):
        assert "p4ss" not in text and "T0KEN" not in text and SECRET not in text


async def test_the_channel_keeps_no_cookies_between_posts(receiver: Receiver):
    receiver.answer(Answer(200, {"Set-Cookie": "session=receiver-cookie; Path=/"}))
    async with open_channel(receiver.url) as channel:
        await channel.deliver("request", a_decision(), None)
        await channel.deliver("update", a_decision(status="denied"), None)
    assert "Cookie" not in receiver.received[1].headers
