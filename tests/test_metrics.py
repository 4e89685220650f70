"""/metrics: what an operator graphs and alerts on, scraped from a real gateway.

Counters are process-wide (every gateway a test starts shares them), so tests compare a scrape with an
earlier one; gauges are read as they stand.
"""

from __future__ import annotations

import asyncio
import math
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import PENDING_DECISIONS, PendingDecisions
from tests.approvals.support import api, approval_policy, wait_for_decisions
from tests.approvals.test_channels_outbox import RecordingChannel, channel_gateway
from tests.support.harness import Clock, Gateway, run_gateway, servers


async def scrape(gw: Gateway) -> dict[tuple[str, frozenset], float]:
    """Every sample of one scrape, by (name, labels)."""
    response = await api(gw, "GET", "/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_pending_decisions_come_from_the_database_so_every_replica_reports_them(tmp_path, database):
    shared = database or {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"}
    config = {"policy": approval_policy(), "servers": servers(tmp_path), "approval_hold_s": 30, **shared}
    async with (
        run_gateway(tmp_path / "a", **config) as one,
        run_gateway(tmp_path / "b", grants=[], tokens=one.tokens, **config) as other,
        one.session("jobs") as session,
    ):
        other.state.pending_decisions.max_age_s = 0  # every scrape asks the database (the default shares 2 s)
        before = await scrape(one)
        assert value(await scrape(other), "holdgate_pending_decisions") == 0

        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "m-1"}))
        [decision] = await wait_for_decisions(one)
        held_elsewhere = await scrape(other)
        await api(one, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        await asyncio.wait_for(call, 10)
        decided = await scrape(other)
        after = await scrape(one)

    assert value(held_elsewhere, "holdgate_pending_decisions") == 1, "a decision opened on another replica counts"
    assert value(decided, "holdgate_pending_decisions") == 0
    ended = "holdgate_decision_duration_seconds_count"
    assert value(after, ended, ending="approved") == value(before, ended, ending="approved") + 1
    waited = value(after, "holdgate_decision_duration_seconds_sum", ending="approved") - value(
        before, "holdgate_decision_duration_seconds_sum", ending="approved"
    )
    assert 0 <= waited < 60, "time to decision: from the opening to the approval"
    assert value(after, "holdgate_decisions_total", status="approved") == (
        value(before, "holdgate_decisions_total", status="approved") + 1
    )


async def test_the_scrape_has_no_created_series_and_durations_are_named_in_seconds(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path)) as gw,
        gw.session("jobs") as session,
    ):
        await session.call_tool("list-async-jobs", {})
        text = (await api(gw, "GET", "/metrics")).text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert not [name for name in names if name.endswith("_created")]
    assert "holdgate_tool_call_duration_seconds_bucket" in names
    assert not [
        name
        for name in names
        if name.startswith("holdgate_")
        and name.endswith("_seconds_bucket")
        and not name.endswith("_duration_seconds_bucket")
    ]


async def test_upstream_up_is_one_per_server_and_zero_for_one_that_does_not_start(tmp_path):
    upstreams = {**servers(tmp_path), "ghost": {"command": sys.executable, "args": ["-c", "raise SystemExit(3)"]}}
    async with run_gateway(tmp_path, policy=approval_policy(), servers=upstreams, upstream_connect_timeout_s=5) as gw:
        samples = await scrape(gw)
    assert value(samples, "holdgate_upstream_up", server="jobs") == 1
    assert ("holdgate_upstream_up", frozenset({("server", "ghost")})) in samples
    assert value(samples, "holdgate_upstream_up", server="ghost") == 0


async def test_policy_reload_state_says_whether_the_last_load_was_refused_and_when(tmp_path):
    clock = Clock(1_900_000_000.0)
    async with run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), clock=clock) as gw:
        loaded = await scrape(gw)
        policy_file = tmp_path / "config" / "policy.json"
        good = policy_file.read_text()
        policy_file.write_text('{"version": "1", "default": "maybe"}')
        clock.now += 60
        gw.state.policy.reload()
        refused = await scrape(gw)
        policy_file.write_text(good)
        clock.now += 60
        gw.state.policy.reload()
        fixed = await scrape(gw)

    assert value(loaded, "holdgate_policy_last_reload_success") == 1
    assert value(loaded, "holdgate_policy_last_reload_timestamp_seconds") == 1_900_000_000
    assert value(refused, "holdgate_policy_last_reload_success") == 0
    assert value(refused, "holdgate_policy_last_reload_timestamp_seconds") == 1_900_000_060
    assert value(fixed, "holdgate_policy_last_reload_success") == 1
    assert value(fixed, "holdgate_policy_last_reload_timestamp_seconds") == 1_900_000_120


async def test_outbox_failures_are_counted_by_channel_and_a_message_given_up_once(tmp_path):
    channel = RecordingChannel(failures=100)
    async with (
        channel_gateway(tmp_path, channel, outbox_max_attempts=3, outbox_retry_base_s=0.01) as gw,
        gw.session("jobs") as session,
    ):
        before = await scrape(gw)
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "m-2"}))
        await wait_for_decisions(gw)
        for _ in range(500):
            after = await scrape(gw)
            if value(after, "holdgate_outbox_given_up_total", channel="console") > value(
                before, "holdgate_outbox_given_up_total", channel="console"
            ):
                break
            await asyncio.sleep(0.02)
        call.cancel()

    failures = "holdgate_outbox_failures_total"
    assert value(after, failures, channel="console") - value(before, failures, channel="console") == 3
    given_up = "holdgate_outbox_given_up_total"
    assert value(after, given_up, channel="console") - value(before, given_up, channel="console") == 1


@pytest.mark.unit
async def test_pending_count_is_shared_by_scrapes_within_its_age_and_unknown_when_the_database_fails():
    now = [0.0]
    answers: list[int | Exception] = [3, 5, RuntimeError("database down")]
    queries = 0

    async def count() -> int:
        nonlocal queries
        queries += 1
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    pending = PendingDecisions(count, max_age_s=2.0, clock=lambda: now[0])
    await asyncio.gather(pending.refresh(), pending.refresh(), pending.refresh())
    assert queries == 1 and PENDING_DECISIONS._value.get() == 3
    now[0] = 1.9
    await pending.refresh()
    assert queries == 1
    now[0] = 2.0
    await pending.refresh()
    assert queries == 2 and PENDING_DECISIONS._value.get() == 5
    now[0] = 4.0
    await pending.refresh()
    assert math.isnan(PENDING_DECISIONS._value.get()), "a failed count is unknown, not a stale number"
