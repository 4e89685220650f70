"""The email channel: one request per approver with their own signed links, and a follow-up when it ends.

What the outbox asks for, and what this channel mails:

- `request`: every approver with an address gets their own message (their own Approve and Deny
  links, signed for that address). Returns the thread reference `<decision id>@<sender domain>`;
  each recipient's Message-ID is derived from it, so a retried send reuses the same Message-ID.
- `reminder`: the request again, under the same thread, to approvers who have not voted yet.
- `update`: once the decision has ended, one short follow-up to everyone who got the request,
  threaded under it (In-Reply-To/References). The outbox sends an `update` for the ending and
  another when the released call finishes; only the first one that goes out is mailed, so nobody
  gets two notes about one decision.

Raising means the outbox retries later (an SMTP outage delays, never loses); a decision that ended
before its request could be sent is not mailed at all (there is nothing left to decide).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from email.message import EmailMessage
from email.utils import parseaddr

from bots.email.links import Action, LinkClaim, LinkSigner
from bots.email.mailer import Mailer, SmtpConfig
from bots.email.messages import Links, followup_message, request_message
from bots.email.routes import DECIDE_PREFIX, hide_link_tokens_in_access_log
from bots.email.settings import EmailSettings, email_problems
from service.approvals import ApprovalService, DecisionView, was_sent
from service.approvals.channels import MessageKind
from service.settings import Settings

logger = logging.getLogger(__name__)


class EmailChannel:
    name = "email"

    def __init__(self, mailer: Mailer, signer: LinkSigner, *, sender: str, public_url: str) -> None:
        self.mailer = mailer
        self.signer = signer
        self.sender = sender
        self.public_url = public_url.rstrip("/")
        self.domain = parseaddr(sender)[1].rpartition("@")[2] or "holdgate.invalid"
        self._approvals: ApprovalService | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailChannel:
        """The channel for the service's settings and their email section; refuses (ValueError, naming every
        variable to fix) without the sender, the public URL that links point at, or the key that signs them."""
        email = settings.section("email", EmailSettings)
        if email.smtp_url is None:
            raise ValueError("email approvals need HOLDGATE_SMTP_URL")
        problems = email_problems(email, settings)
        if problems:
            raise ValueError("email approvals are enabled (HOLDGATE_SMTP_URL) but " + "; ".join(problems))
        assert email.email_from and settings.public_url and settings.secret_key  # checked by email_problems
        config = SmtpConfig.from_url(email.smtp_url.get_secret_value())
        logger.info("email approvals: mail via %s from %s", config.describe(), email.email_from)
        signer = LinkSigner(settings.secret_key.get_secret_value())
        return cls(Mailer(config), signer, sender=email.email_from, public_url=settings.public_url)

    async def start(self, approvals: ApprovalService) -> None:
        self._approvals = approvals
        hide_link_tokens_in_access_log()

    async def aclose(self) -> None:
        return None

    # -- the Channel protocol ---------------------------------------------------------------------

    async def deliver(self, kind: MessageKind, decision: DecisionView, ref: str | None) -> str | None:
        if kind == "request":
            return await self._request(decision)
        if kind == "reminder":
            await self._reminder(decision, ref)
        else:
            await self._followup(decision, ref)
        return ref

    def link(self, decision: DecisionView, address: str, action: Action) -> str:
        """The signed URL with which `address` may `action` this decision."""
        claim = LinkClaim(decision.id, address, action, _timestamp(decision.expires_at))
        return f"{self.public_url}{DECIDE_PREFIX}{self.signer.sign(claim)}"

    # -- internals --------------------------------------------------------------------------------

    async def _request(self, decision: DecisionView) -> str | None:
        if decision.status != "pending":
            logger.info("decision %s is %s before its email went out; not mailed", decision.id, decision.status)
            return None
        ref = f"{decision.id}@{self.domain}"
        recipients = _recipients(decision)
        if not recipients:
            logger.warning("decision %s names the email channel but none of its approvers has an address", decision.id)
            return None
        await self.mailer.send([self._request_message(decision, ref, name, address) for name, address in recipients])
        logger.info("decision %s: approval request mailed to %d approver(s)", decision.id, len(recipients))
        return ref

    async def _reminder(self, decision: DecisionView, ref: str | None) -> None:
        if decision.status != "pending":
            return
        voted = {vote.approver for vote in decision.votes}
        thread = ref or f"{decision.id}@{self.domain}"
        messages = [
            self._request_message(decision, thread, name, address, reminder=ref is not None)
            for name, address in _recipients(decision)
            if name not in voted
        ]
        await self.mailer.send(messages)

    async def _followup(self, decision: DecisionView, ref: str | None) -> None:
        if ref is None or decision.status == "pending":
            return  # the request was never mailed, or there is no ending yet
        if self._approvals is not None and await was_sent(
            self._approvals.sessions, decision_id=decision.id, channel=self.name, kind="update"
        ):
            return  # an earlier update already told of the ending
        messages = [
            followup_message(
                decision,
                sender=self.sender,
                recipient=address,
                message_id=_message_id(ref, "ended", address),
                thread=_message_id(ref, "request", address),
            )
            for _, address in _recipients(decision)
        ]
        await self.mailer.send(messages)
        logger.info("decision %s: %s, follow-up mailed to %d approver(s)", decision.id, decision.status, len(messages))

    def _request_message(
        self, decision: DecisionView, ref: str, name: str, address: str, *, reminder: bool = False
    ) -> EmailMessage:
        links = Links(
            approve=self.link(decision, address, "approve"),
            deny=self.link(decision, address, "deny"),
            page=f"{self.public_url}/decisions/{decision.id}",
        )
        request_id = _message_id(ref, "request", address)
        return request_message(
            decision,
            sender=self.sender,
            recipient=address,
            approver=name,
            links=links,
            message_id=_message_id(ref, "reminder", address) if reminder else request_id,
            reminder=reminder,
            thread=request_id if reminder else None,
        )


def _recipients(decision: DecisionView) -> list[tuple[str, str]]:
    """(approver name, address) for every address of every approver, each address once; never one who may not
    vote (the grant that made the call, or on a four-eyes decision the person its agent acts for)."""
    seen: set[str] = set()
    recipients = []
    for approver in decision.approver_details:
        if not decision.may_vote(approver.name):
            continue
        for address in approver.ids(EmailChannel.name):
            if address.lower() not in seen:
                seen.add(address.lower())
                recipients.append((approver.name, address))
    return recipients


def _message_id(ref: str, tag: str, address: str) -> str:
    """A stable Message-ID per decision, message kind and recipient (a retry reuses it)."""
    left, _, domain = ref.rpartition("@")
    digest = hashlib.sha256(address.lower().encode()).hexdigest()[:12]
    return f"<{left}.{tag}.{digest}@{domain}>"


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
