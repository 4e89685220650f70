"""The outbox: channel notifications are retried until delivered, and a channel failure decides nothing."""

from __future__ import annotations

import asyncio
import logging
import time

from service.approvals.schemas import DecisionView
from tests.approvals.support import api, approval_policy, wait_for_decisions
from tests.support.harness import Clock, executed_calls, run_gateway, servers


class RecordingChannel:
    """A channel that is down for its first `failures` deliveries, then records what it is sent."""

    def __init__(self, failures: int = 0) -> None:
        self.name = "console"
        self.failures = failures
        self.attempts = 0
        self.delivered: list[tuple[str, str, str | None]] = []
        self.changed = asyncio.Event()

    async def deliver(self, kind: str, decision: DecisionView, ref: str | None) -> str | None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("channel is down")
        self.delivered.append((kind, decision.status, ref))
        self.changed.set()
        return f"ref-{decision.id}" if kind == "request" else None

    async def wait_for(self, count: int) -> None:
        while len(self.delivered) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)


def with_channel(channel: RecordingChannel):
    return lambda state: setattr(state, "channels", {"console": channel})


async def test_a_channel_outage_delays_notifications_but_loses_none(tmp_path):
    channel = RecordingChannel(failures=3)
    async with (
        run_gateway(
            tmp_path,
            policy=approval_policy(),
            servers=servers(tmp_path),
            configure=with_channel(channel),
            approval_hold_s=30,
            outbox_retry_base_s=0.02,
            outbox_poll_interval_s=0.02,
        ) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "out-1"}))
        [decision] = await wait_for_decisions(gw)
        assert decision.status == "pending", "a failing channel never decides anything"
        await channel.wait_for(1)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        await asyncio.wait_for(call, 10)
        await channel.wait_for(3)

    assert channel.attempts == 3 + len(channel.delivered)
    assert channel.delivered[0] == ("request", "pending", None)
    # Updates (decided, then executed) edit the original request through its reference.
    assert [(kind, status) for kind, status, _ in channel.delivered[1:]] == [("update", "approved")] * 2
    assert {ref for _, _, ref in channel.delivered[1:]} == {f"ref-{decision.id}"}
    assert len([c for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]) == 1


async def test_a_reminder_goes_out_once_before_the_timeout(tmp_path):
    channel = RecordingChannel()
    clock = Clock(time.time())
    async with (
        run_gateway(
            tmp_path,
            policy=approval_policy(remind_before="2m"),
            servers=servers(tmp_path),
            clock=clock,
            configure=with_channel(channel),
            approval_hold_s=30,
            approval_sweep_interval_s=0.02,
            outbox_poll_interval_s=0.02,
        ) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "rem-1"}))
        await wait_for_decisions(gw)
        await channel.wait_for(1)
        clock.now += 12 * 60
        await asyncio.sleep(0.2)
        assert [kind for kind, _, _ in channel.delivered] == ["request"], "no reminder before its time"
        clock.now += 60
        await channel.wait_for(2)
        await asyncio.sleep(0.2)  # several more sweeps run
        kinds = [kind for kind, _, _ in channel.delivered]
        call.cancel()
    assert kinds == ["request", "reminder"]


async def test_by_default_the_console_channel_prints_the_commands_that_decide(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="holdgate.console")
    async with (
        run_gateway(
            tmp_path,
            policy=approval_policy(),
            servers=servers(tmp_path),
            approval_hold_s=30,
            outbox_poll_interval_s=0.02,
        ) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "con-1"}))
        [decision] = await wait_for_decisions(gw)
        for _ in range(200):
            if decision.id in caplog.text:
                break
            await asyncio.sleep(0.02)
        call.cancel()
    assert f"APPROVAL NEEDED {decision.id}" in caplog.text
    assert f"holdgate approve {decision.id}" in caplog.text
    assert f"holdgate deny {decision.id} --reason" in caplog.text
