"""The outbox: channel notifications are retried until delivered, and a channel failure decides nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from service.approvals.outbox import until_quiet
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
        self.views: list[DecisionView] = []
        self.changed = asyncio.Event()

    async def deliver(self, kind: str, decision: DecisionView, ref: str | None) -> str | None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("channel is down")
        self.delivered.append((kind, decision.status, ref))
        self.views.append(decision)
        self.changed.set()
        return f"ref-{decision.id}" if kind == "request" else None

    async def wait_for(self, count: int) -> None:
        await self.wait_until(lambda: len(self.delivered) >= count)

    async def wait_until(self, done: Callable[[], bool]) -> None:
        while not done():
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)


def channel_gateway(tmp_path, channel: RecordingChannel, *, policy: dict[str, Any] | None = None, **settings: Any):
    """holdgate in front of the jobs server, with `channel` as its console channel and a fast outbox poll."""
    return run_gateway(
        tmp_path,
        policy=policy or approval_policy(),
        servers=servers(tmp_path),
        channels={"console": channel},
        approval_hold_s=30,
        outbox_poll_interval_s=0.02,
        **settings,
    )


async def test_a_channel_outage_delays_notifications_but_loses_none(tmp_path):
    channel = RecordingChannel(failures=3)
    async with (
        channel_gateway(tmp_path, channel, outbox_retry_base_s=0.02) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "out-1"}))
        [decision] = await wait_for_decisions(gw)
        assert decision.status == "pending", "a failing channel never decides anything"
        await channel.wait_for(1)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        await asyncio.wait_for(call, 10)
        await channel.wait_until(lambda: channel.views[-1].execution is not None)

    assert channel.attempts == 3 + len(channel.delivered)
    assert channel.delivered[0] == ("request", "pending", None)
    # Updates (decided, then executed: one, when the outbox reads both at once) edit the original request
    # through its reference, and the last shows how the released call went.
    updates = [(kind, status) for kind, status, _ in channel.delivered[1:]]
    assert updates in ([("update", "approved")], [("update", "approved")] * 2)
    assert {ref for _, _, ref in channel.delivered[1:]} == {f"ref-{decision.id}"}
    assert channel.views[-1].execution.outcome == ("tool_error" if call.result().is_error else "ok")
    assert len([c for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]) == 1


async def test_a_reminder_goes_out_once_before_the_timeout(tmp_path):
    channel = RecordingChannel()
    clock = Clock(time.time())
    async with (
        channel_gateway(
            tmp_path, channel, policy=approval_policy(remind_before="2m"), clock=clock, approval_sweep_interval_s=0.02
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


async def test_a_row_of_an_unknown_kind_fails_for_good_saying_why_and_reaches_no_channel(tmp_path):
    """The approvals service writes only the kinds channels render, but a row from another version of holdgate
    or a hand-edited database must not be handed to a channel as if it were one of them."""
    from sqlalchemy import select

    from service.db import session_scope
    from service.models import OutboxMessage

    channel = RecordingChannel()
    async with (
        channel_gateway(tmp_path, channel) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "kind-1"}))
        [decision] = await wait_for_decisions(gw)
        await channel.wait_for(1)
        async with session_scope(gw.state.sessions) as db:
            row = OutboxMessage(
                decision_id=decision.id, channel="console", kind="digest", created_at=0.0, next_attempt_at=0.0
            )
            db.add(row)
            await db.flush()
            row_id = row.id
        for _ in range(500):
            async with gw.state.sessions() as db:
                stored = await db.scalar(select(OutboxMessage).where(OutboxMessage.id == row_id))
            if stored is not None and (stored.failed_at or stored.sent_at):
                break
            await asyncio.sleep(0.02)
        kinds = [kind for kind, _, _ in channel.delivered]  # before the cancelled call's own update
        call.cancel()

    assert stored is not None
    assert stored.failed_at is not None and stored.sent_at is None
    assert stored.last_error == "unknown message kind 'digest'"
    assert kinds == ["request"]


class GatedChannel(RecordingChannel):
    """A channel whose first request delivery waits for `gate`, holding the outbox worker inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.inside, self.gate = asyncio.Event(), asyncio.Event()

    async def deliver(self, kind: str, decision: DecisionView, ref: str | None) -> str | None:
        if kind == "request":
            self.inside.set()
            await self.gate.wait()
        return await super().deliver(kind, decision, ref)


async def test_updates_read_together_are_sent_once_with_the_latest_state(tmp_path):
    channel = GatedChannel()
    async with (
        channel_gateway(tmp_path, channel) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "both-1"}))
        [decision] = await wait_for_decisions(gw)
        await asyncio.wait_for(channel.inside.wait(), 10)  # the worker is busy with the request
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        await asyncio.wait_for(call, 10)  # approved and executed: two update rows wait
        channel.gate.set()
        await channel.wait_for(2)
        await asyncio.sleep(0.2)  # several more polls: nothing else is sent
        outbox = await gw_outbox(gw, decision.id)

    assert channel.delivered == [("request", "pending", None), ("update", "approved", f"ref-{decision.id}")]
    execution = channel.views[-1].execution
    assert execution is not None and execution.outcome == ("tool_error" if call.result().is_error else "ok")
    assert [(kind, sent) for kind, sent in outbox] == [("request", True), ("update", True), ("update", True)]


async def gw_outbox(gw, decision_id: str) -> list[tuple[str, bool]]:
    from sqlalchemy import select

    from service.models import OutboxMessage

    async with gw.state.sessions() as session:
        rows = await session.execute(
            select(OutboxMessage.kind, OutboxMessage.sent_at)
            .where(OutboxMessage.decision_id == decision_id)
            .order_by(OutboxMessage.id)
        )
        return [(kind, sent_at is not None) for kind, sent_at in rows]


async def test_background_delivery_waits_while_the_event_loop_is_saturated():
    busy = True

    async def hog(seconds: float) -> None:
        """Block the loop in 30 ms slices, as thousands of calls being released at once do."""
        nonlocal busy
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.03)
            await asyncio.sleep(0)
        busy = False

    hogging = asyncio.create_task(hog(0.3))
    await asyncio.sleep(0)
    await until_quiet()
    assert not busy, "delivery went ahead while the loop was saturated"
    await hogging

    busy = True
    endless = asyncio.create_task(hog(60))
    await asyncio.sleep(0)
    started = time.monotonic()
    await until_quiet(max_wait=0.2)
    assert busy and time.monotonic() - started < 5, "a saturated loop delays notifications, never stops them"
    endless.cancel()
