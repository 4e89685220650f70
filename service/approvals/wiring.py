"""Putting the approvals domain together inside the service's lifespan.

`start_approvals` builds the service, the bus, the timers, the outbox worker and the gate, connects
them (every committed decision change wakes held calls, resets timers and the outbox), starts the
background work on the lifespan's exit stack, and installs the gate as the gateway's hold point.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from service import metrics
from service.approvals.bus import DecisionBus
from service.approvals.channels import Channel, ChannelLifecycle, load_plugins
from service.approvals.hold import ApprovalGate
from service.approvals.leases import ClaimLeases
from service.approvals.outbox import OutboxWorker
from service.approvals.pg_listen import PgDecisionListener
from service.approvals.service import ApprovalService
from service.approvals.timeouts import DecisionTimers
from service.audit.service import AuditRecord, AuditWriter
from service.models import Decision
from service.settings import Settings

if TYPE_CHECKING:
    from service.app import AppState


@dataclass
class Approvals:
    service: ApprovalService
    bus: DecisionBus
    timers: DecisionTimers
    outbox: OutboxWorker
    gate: ApprovalGate


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


async def start_approvals(state: AppState, stack: AsyncExitStack) -> Approvals:
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
    gate = ApprovalGate(
        service,
        bus,
        state.policy,
        progress_interval=settings.approval_progress_interval_s,
        hold_bound=settings.approval_hold_s,
        args_digest=state.audit.args_digest,
    )
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
    state.core.approvals = gate
    return Approvals(service, bus, timers, outbox, gate)


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
