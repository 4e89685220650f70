"""Putting the approvals domain together: built with the app, started by its lifespan.

`build_approvals` builds the service, the bus, the timers, the outbox worker and the call holding and
connects them (every committed decision change wakes held calls, resets timers and the outbox); it runs
before the server serves, so every route finds approvals ready. `Approvals.start` starts the channels, the
timers and the background work on the lifespan's exit stack. The gateway holds its calls through
`Approvals.holding` (`service.gateway.hold.ApprovalGate`, built by the app: approvals know nothing of MCP).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import metrics
from service.approvals.bus import DecisionBus
from service.approvals.channels import Channel, ChannelLifecycle, load_plugins
from service.approvals.holding import CallHolding
from service.approvals.leases import ClaimLeases
from service.approvals.outbox import OutboxWorker
from service.approvals.pg_listen import PgDecisionListener
from service.approvals.service import ApprovalService
from service.approvals.timeouts import DecisionTimers
from service.audit.service import AuditRecord, AuditWriter
from service.background import cancel_and_wait
from service.models import Decision
from service.policy.holder import PolicySource
from service.settings import Settings


@dataclass
class Approvals:
    """The approvals domain of one running gateway, built by `build_approvals`."""

    service: ApprovalService
    bus: DecisionBus
    timers: DecisionTimers
    outbox: OutboxWorker
    holding: CallHolding
    poll_interval: float
    """How often held calls look for decisions taken in another process (`HOLDGATE_APPROVAL_POLL_INTERVAL_S`)."""
    listen_url: str | None = None
    """The PostgreSQL database to LISTEN on for decisions taken by other replicas; None on SQLite."""

    async def start(self, stack: AsyncExitStack) -> None:
        """Start the channels, the timers and the background work; `stack` stops them."""
        metrics.watch_held_calls(self.bus.held_calls)
        for channel in self.outbox.channels.values():
            if isinstance(channel, ChannelLifecycle):
                await channel.start(self.service)
                stack.push_async_callback(channel.aclose)
        await self.timers.start()
        stack.push_async_callback(self.timers.aclose)
        background = [
            ("outbox", self.outbox.run()),
            ("decision-poll", self.bus.poll(self.service.status_of, self.poll_interval)),
            ("claim-leases", ClaimLeases(self.service).run()),  # its first tick reconciles at start-up
        ]
        if self.listen_url is not None:
            background.append(("decision-listen", PgDecisionListener(self.listen_url, self.bus, self.timers).run()))
        for name, work in background:
            task = asyncio.create_task(work, name=name)
            stack.push_async_callback(cancel_and_wait, task)


def build_channels(settings: Settings) -> dict[str, Channel]:
    """The channels this gateway can deliver to, by name: each plug-in of `settings.channels` that is
    configured (the console always; Slack and email when their settings are given). A misconfigured
    one raises ValueError naming the settings to fix."""
    channels: dict[str, Channel] = {}
    for plugin in load_plugins(settings.channels):
        channel = plugin.build(settings)
        if channel is not None:
            channels[plugin.name] = channel
    return channels


def build_approvals(
    settings: Settings,
    *,
    sessions: async_sessionmaker[AsyncSession],
    audit: AuditWriter,
    policy: PolicySource,
    channels: dict[str, Channel],
    clock: Callable[[], float],
    listen_url: str | None,
) -> Approvals:
    """The approvals domain, connected and not started: nothing runs until `Approvals.start`."""
    service = ApprovalService(sessions, clock=clock, lease_s=settings.approvals.claim_lease_s)
    bus = DecisionBus()
    timers = DecisionTimers(service, clock=clock, sweep_interval=settings.approvals.sweep_interval_s)
    outbox = OutboxWorker(
        sessions,
        channels,
        clock=clock,
        poll_interval=settings.approvals.outbox_poll_interval_s,
        max_attempts=settings.approvals.outbox_max_attempts,
        retry_base=settings.approvals.outbox_retry_base_s,
    )
    service.listeners += [lambda decision: bus.publish(decision.id), timers.watch, outbox.wake]
    service.local_waiters = bus.waiting
    service.audit_event = partial(audit_decision_event, audit, clock)
    holding = CallHolding(service, bus, policy, args_digest=audit.args_digest)
    return Approvals(
        service, bus, timers, outbox, holding, poll_interval=settings.approvals.poll_interval_s, listen_url=listen_url
    )


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
