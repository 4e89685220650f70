"""Claims of approved calls as leases: renewed while this process runs them, reconciled when a holder dies.

Every `interval` (a third of the lease), each process renews the leases of the calls it is running and
reconciles every expired one (`ApprovalService.reconcile`), its own previous life's and dead peers' alike:
a process's identity is new at each start (`new_holder_id`), so "what I held when I died" is found the same
way as what a dead peer held — by a lease nobody renewed. The first tick runs at start-up. Calls of unknown
outcome get their audit record from `reconcile` ("outcome unknown"), since the record of the process that sent
them died with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.approvals.release import Reconciled
    from service.approvals.service import ApprovalService

logger = logging.getLogger(__name__)


class ClaimLeases:
    def __init__(self, service: ApprovalService) -> None:
        self.service = service
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
        return await self.service.reconcile()
