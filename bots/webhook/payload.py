"""The JSON body of one webhook notification, its delivery id, and how a body too large is cut down.

```
{"event": "request" | "reminder" | "update",
 "delivery": "<decision id>.request" | "<decision id>.reminder" | "<decision id>.update.<16 hex>",
 "request_delivery": null | "<the delivery id of this decision's request>",
 "decision": {... the decision as GET /api/decisions/{id} shows it ...},
 "links": {"decision": ".../api/decisions/<id>", "approve": ".../api/decisions/<id>/approve",
           "deny": ".../api/decisions/<id>/deny", "dashboard": ".../decisions/<id>"},
 "omitted": []}
```

The delivery id names the notification, so that a retry (the outbox asks the channel again) carries the
same one and a receiver that dedupes on it handles the notification once. A decision has one request and
at most one reminder: theirs are `<decision id>.request` and `<decision id>.reminder`, whatever the decision
looks like by the time a retry goes out. Updates come several to a decision (its ending, then how the
released call went), and the outbox does not tell the channel which row it is sending: an update's id is
`<decision id>.update.<digest of the body>`, so an unchanged retry keeps it, and two updates that say
exactly the same thing (the ending's, sent after the call had finished, and the call's own) share it, which
is what deduping wants; a retry that finds the decision moved on says so under a new id.

Links are absolute when `HOLDGATE_PUBLIC_URL` is set, else paths on holdgate's own base URL. They are the
REST API's documented paths (README "HTTP routes"); this module cannot import `service.api` (a channel
sits below it), so they are spelled here.

A body over the limit leaves out the call's arguments first (the one part of unbounded size: they come from
the agent), then everything but the decision's identity and standing; `omitted` names what was left out,
and the receiver reads the whole decision from `links.decision`. A body is never cut mid-JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from service.approvals import DecisionView
from service.approvals.channels import MessageKind

ESSENTIAL_FIELDS = (
    "id",
    "status",
    "state",
    "server",
    "tool",
    "grant",
    "rule",
    "quorum",
    "created_at",
    "expires_at",
    "decided_at",
    "decided_by",
    "decided_via",
    "released",
    "lapsed",
)
"""What a body keeps of the decision when even one without the arguments is too large."""


@dataclass(frozen=True)
class Notification:
    """One body ready to sign and POST."""

    event: MessageKind
    delivery: str
    body: bytes
    omitted: tuple[str, ...] = ()


def notification(
    event: MessageKind, decision: DecisionView, request_delivery: str | None, *, public_url: str | None, max_bytes: int
) -> Notification:
    """The body for `event` about `decision`, at most `max_bytes` long if leaving things out can make it so."""
    full = decision.model_dump(mode="json")
    without_arguments = {k: v for k, v in full.items() if k != "arguments"}
    essential = {k: v for k, v in full.items() if k in ESSENTIAL_FIELDS}
    decision_links = links(decision.id, public_url)
    for shown in (full, without_arguments):
        notice = _notification(event, shown, request_delivery, decision_links, full)
        if len(notice.body) <= max_bytes:
            return notice
    # The essentials alone: bounded by ids and names, sent whatever the limit.
    return _notification(event, essential, request_delivery, decision_links, full)


def links(decision_id: str, public_url: str | None) -> dict[str, str]:
    """Where the receiver reads and decides the decision (REST, with a person's token) and where a person
    sees it (the dashboard)."""
    base = public_url.rstrip("/") if public_url else ""
    api = f"{base}/api/decisions/{quote(decision_id, safe='')}"
    return {
        "decision": api,
        "approve": f"{api}/approve",
        "deny": f"{api}/deny",
        "dashboard": f"{base}/decisions/{quote(decision_id, safe='')}",
    }


def _notification(
    event: MessageKind,
    decision: dict[str, Any],
    request_delivery: str | None,
    decision_links: dict[str, str],
    full: dict[str, Any],
) -> Notification:
    omitted = tuple(name for name in full if name not in decision)
    content = {
        "event": event,
        "request_delivery": request_delivery,
        "decision": decision,
        "links": decision_links,
        "omitted": list(omitted),
    }
    delivery = f"{decision['id']}.{event}"
    if event == "update":
        delivery += "." + hashlib.sha256(_encode(content)).hexdigest()[:16]
    body = _encode({"event": event, "delivery": delivery, **{k: v for k, v in content.items() if k != "event"}})
    return Notification(event, delivery, body, omitted)


def _encode(content: dict[str, Any]) -> bytes:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
