"""Signed email links: one decision, one approver, one action, valid until the decision expires.

A link token is the approver's capability, so it carries everything the vote needs — decision id,
the address the mail went to, the action and the decision's `expires_at` — signed with
`HOLDGATE_SECRET_KEY` (itsdangerous, HMAC-SHA256, a salt of its own). Changing any part breaks the
signature, so a link for one decision, person or action can never be turned into another.

This module knows nothing about the database: whether the decision is still pending, or whether the
address is still an approver, is the approvals service's business. "Single use" follows from that:
a person votes once, and a decision leaves `pending` once, so a replayed link changes nothing.

The confirmation page's form carries a second token derived from the link token (another salt), so
a POST can only come from a page rendered for that very link.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from itsdangerous import BadSignature, Signer, URLSafeSerializer

Action = Literal["approve", "deny"]
ACTIONS: tuple[Action, ...] = ("approve", "deny")


class LinkError(Exception):
    """A link that cannot be used; `message` is for the person who opened it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadLink(LinkError):
    """Tampered, truncated, or signed by another gateway (another secret key)."""


class ExpiredLink(LinkError):
    """Signed by us, but the decision it was for has expired."""

    def __init__(self, claim: LinkClaim) -> None:
        super().__init__(f"this link expired with its decision at {_iso(claim.expires_at)}")
        self.claim = claim


@dataclass(frozen=True, slots=True)
class LinkClaim:
    """What a valid link says: `address` may `action` decision `decision_id` until `expires_at`."""

    decision_id: str
    address: str
    action: Action
    expires_at: float


class LinkSigner:
    """Signs and verifies link tokens and the confirmation form's anti-forgery token."""

    def __init__(self, secret_key: str, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._links = URLSafeSerializer(
            secret_key, salt="holdgate.email.link", signer_kwargs={"digest_method": hashlib.sha256}
        )
        self._forms = Signer(secret_key, salt="holdgate.email.form", digest_method=hashlib.sha256)

    def sign(self, claim: LinkClaim) -> str:
        """The URL-safe token for `claim`."""
        payload = {
            "d": claim.decision_id,
            "a": claim.address,
            "x": claim.action,
            "e": math.ceil(claim.expires_at),
        }
        return self._links.dumps(payload)

    def verify(self, token: str) -> LinkClaim:
        """The claim of a token we signed that has not expired; BadLink or ExpiredLink otherwise."""
        try:
            payload = self._links.loads(token)
        except BadSignature:
            raise BadLink("this link is not valid: it was changed, cut short, or not made by this gateway") from None
        try:
            claim = LinkClaim(
                decision_id=str(payload["d"]),
                address=str(payload["a"]),
                action=payload["x"],
                expires_at=float(payload["e"]),
            )
        except (KeyError, TypeError, ValueError):
            raise BadLink("this link is not valid") from None
        if claim.action not in ACTIONS:
            raise BadLink("this link is not valid")
        if self.clock() >= claim.expires_at:
            raise ExpiredLink(claim)
        return claim

    def form_token(self, token: str) -> str:
        """The anti-forgery value the confirmation page embeds in its form for this link."""
        return self._forms.get_signature(token).decode()

    def check_form_token(self, token: str, form_token: str) -> bool:
        return hmac.compare_digest(self.form_token(token).encode(), form_token.encode())


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
