"""Putting the approvals domain together inside the service's lifespan.

`start_approvals` builds the service, the bus, the timers, the outbox worker and the call holding, connects
them (every committed decision change wakes held calls, resets timers and the outbox), and starts the
background work on the lifespan's exit stack. The gateway holds its calls through `Approvals.holding`
(`service.gateway.hold.ApprovalGate`, built by the app).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Protocol

from bots.base import Channel, ChannelLifecycle
from bots.console import ConsoleChannel
from service import metrics
from service.approvals.bus import DecisionBus
from service.approvals.holding import CallHolding
from service.approvals.leases import ClaimLeases
from service.approvals.outbox import OutboxWorker
from service.approvals.pg_listen import PgDecisionListener
from service.approvals.service import ApprovalService
from service.approvals.timeouts import DecisionTimers
from service.audit.service import AuditRecord, AuditWriter
from service.models import Decision
from service.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from service.policy.holder import PolicySource


class _Clocked(Protocol):
    @property
    def clock(self) -> Callable[[], float]: ...


class ApprovalsHost(Protocol):
    """What `start_approvals` reads of the app's state (`service.app.AppState`, which approvals must not
    import: the app is above every domain, the gateway included)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]: ...

    @property
    def policy(self) -> PolicySource: ...

    @property
    def audit(self) -> AuditWriter: ...

    @property
    def core(self) -> _Clocked: ...

    @property
    def channels(self) -> dict[str, Channel] | None: ...


@dataclass
class Approvals:
    service: ApprovalService
    bus: DecisionBus
    timers: DecisionTimers
    outbox: OutboxWorker
    holding: CallHolding


def build_channels(settings: Settings) -> dict[str, Channel]:
    """The channels this gateway can deliver to: the console always, Slack and email when configured."""
    channels: dict[str, Channel] = {"console": ConsoleChannel()}
    if settings.slack_bot_token is not None:
        from bots.slack.channel import SlackChannel

        channels["slack"] = SlackChannel.from_settings(settings)
    if settings.smtp_url is not None:
        from bots.email.channel import EmailChannel

        channels["email"] = EmailChannel.from_settings(settings)
    return channels


async def start_approvals(state: ApprovalsHost, stack: AsyncExitStack) -> Approvals:
    settings = state.settings
    clock = state.core.clock
    service = ApprovalService(state.sessions, clock=clock, lease_s=settings.claim_lease_s)
    bus = DecisionBus()
    timers = DecisionTimers(service, clock=clock, sweep_interval=settings.approval_sweep_interval_s)
    outbox = OutboxWorker(
        state.sessions,
        state.channels if state.channels is not None else build_channels(settings),
        clock=clock,
        poll_interval=settings.outbox_poll_interval_s,
        max_attempts=settings.outbox_max_attempts,
        retry_base=settings.outbox_retry_base_s,
    )
    service.listeners += [lambda decision: bus.publish(decision.id), timers.watch, outbox.wake]
    service.local_waiters = bus.waiting
    service.audit_event = partial(audit_decision_event, state.audit, clock)
    metrics.watch_held_calls(bus.held_calls)
    holding = CallHolding(service, bus, state.policy, args_digest=state.audit.args_digest)
    for channel in outbox.channels.values():
        if isinstance(channel, ChannelLifecycle):
            await channel.start(service)
            stack.push_async_callback(channel.aclose)
    await timers.start()
    stack.callback(timers.shutdown)
    background = [
        ("outbox", outbox.run()),
        ("decision-poll", bus.poll(service.status_of, settings.approval_poll_interval_s)),
        ("claim-leases", ClaimLeases(service).run()),  # its first tick reconciles at start-up
    ]
    if state.engine.dialect.name == "postgresql":
        background.append(("decision-listen", PgDecisionListener(settings.effective_database_url, bus, timers).run()))
    for name, work in background:
        task = asyncio.create_task(work, name=name)
        stack.push_async_callback(_stop, task)
    return Approvals(service, bus, timers, outbox, holding)


def audit_decision_event(
    audit: AuditWriter, clock: Callable[[], float], decision: Decision, verdict: str, reason: str
) -> None:
    """An audit record for what happened to a decision while no call waited on it (it lapsed, it ended
    cancelled, its sender died: outcome unknown): the call as the decision keeps it (redacted arguments, the
    call's own argument hash)."""
    audit.record(
        AuditRecord(
            ts=clock(),
            grant=decision.grant,
            server=decision.server,
            tool=decision.tool,
            arguments=json.loads(decision.arguments),
            redact=(),
            rule=decision.rule,
            verdict=verdict,
            reason=reason,
            outcome=decision.outcome,
            detail=decision.outcome_detail,
            decision_id=decision.id,
            args_sha256=decision.args_sha256,
        )
    )


async def _stop(task: asyncio.Task) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
