"""The webhook signature: what a receiver recomputes to know a body came from this holdgate, unchanged and
recently.

`X-Holdgate-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, with the timestamp sent as
`X-Holdgate-Timestamp` (unix seconds): the scheme of Slack's v0 and Stripe's signatures. Signing the
timestamp with the body lets a receiver refuse old bodies (a replay) by checking the timestamp is recent;
`X-Holdgate-Delivery` lets it drop a retry it has already handled. README "Webhook" has the receiver's side.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Holdgate-Signature"
TIMESTAMP_HEADER = "X-Holdgate-Timestamp"
DELIVERY_HEADER = "X-Holdgate-Delivery"
EVENT_HEADER = "X-Holdgate-Event"
SCHEME = "sha256="


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `X-Holdgate-Signature` value of `body` sent at `timestamp` (decimal unix seconds)."""
    signed = timestamp.encode("ascii") + b"." + body
    return SCHEME + hmac.new(secret, signed, hashlib.sha256).hexdigest()
