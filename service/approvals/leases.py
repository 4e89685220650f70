"""Claims of approved calls as leases: renewed while this process runs them, reconciled when a holder dies.

Every `interval` (a third of the lease), each process renews the leases of the calls it is running and
reconciles every expired one (`ApprovalService.reconcile`), its own previous life's and dead peers' alike:
a process's identity is new at each start, so "what I held when I died" is found the same way as what a dead
peer held — by a lease nobody renewed. The first tick runs at start-up. Calls of unknown outcome get their
audit record here ("outcome unknown"), since the record of the process that sent them died with it.
"""

from __future__ import annotations

import asyncio
import json
import logging

from service.approvals.service import ApprovalService, Reconciled
from service.audit.service import AuditRecord, AuditWriter
from service.models import Decision

logger = logging.getLogger(__name__)


class ClaimLeases:
    def __init__(self, service: ApprovalService, audit: AuditWriter) -> None:
        self.service = service
        self.audit = audit
        self.interval = service.lease_s / 3

    async def run(self) -> None:
        """Forever: renew, reconcile; a failed tick (the database briefly away) is retried at the next."""
        while True:
            try:
                await self.tick()
            except Exception:
                logger.exception("claim leases: renewal or reconciliation failed; retrying")
            await asyncio.sleep(self.interval)

    async def tick(self) -> Reconciled:
        await self.service.renew_leases()
        reconciled = await self.service.reconcile()
        for decision in reconciled.unknown:
            self.audit.record(unknown_outcome_record(decision))
        return reconciled


def unknown_outcome_record(decision: Decision) -> AuditRecord:
    """The audit record of an approved call that was sent but whose outcome nobody recorded."""
    return AuditRecord(
        ts=decision.outcome_at or decision.sending_at or decision.claimed_at or decision.created_at,
        grant=decision.grant,
        server=decision.server,
        tool=decision.tool,
        arguments=json.loads(decision.arguments),  # already redacted by the policy when the decision was opened
        redact=(),
        rule=decision.rule,
        verdict="approved",
        reason="outcome unknown",
        outcome="unknown",
        detail=decision.outcome_detail,
        decision_id=decision.id,
    )
