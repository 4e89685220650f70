"""The approvers a decision keeps, and whether a voter is one of them.

A decision stores its approvers as JSON when it opens (the policy may change while it waits; the decision keeps
who could approve it then): a list of `{"name": "alice", "contacts": {"slack": ["U0ALICE"], "email": [...]}}`,
where each key of `contacts` is a channel's name and its ids are how that channel recognises the person. Rows
written before contacts were channel-neutral hold `{"name", "slack_ids", "emails"}`; `approvers_of` reads both
(and the migration `approver_contacts` rewrites the old form), so nothing else sees the old shape.

Matching knows no channel: a voter of kind `slack` matches the ids under `slack`, one of kind `email` those
under `email`, and so on for any channel; `service.policy.contacts.same_contact` says when two ids are one
(addresses compare without regard to case, as mail systems treat them; every other id must be equal).
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

from service.models import Decision
from service.policy import Approver
from service.policy.channel_names import CLIENT
from service.policy.contacts import same_contact
from service.policy.redaction import bounded_text

LEGACY_CONTACT_KEYS = {"slack_ids": "slack", "emails": "email"}
"""Where the old stored form kept each channel's ids: its key → the channel's name."""


class ApproverRecord(TypedDict):
    """One approver as a decision keeps it."""

    name: str
    contacts: dict[str, list[str]]
    """channel name → the person's ids on that channel (only channels where they have one)"""


def approver_json(approver: Approver) -> ApproverRecord:
    """The stored form of a policy approver (only channels where they have an id)."""
    return {
        "name": approver.name,
        "contacts": {channel: list(ids) for channel, ids in approver.contacts.items() if ids},
    }


def read_approver(stored: dict[str, Any]) -> ApproverRecord:
    """A stored approver in the current form, whichever form it was written in."""
    if "contacts" in stored:
        return {"name": stored["name"], "contacts": {c: list(ids) for c, ids in stored["contacts"].items()}}
    contacts = {channel: list(stored.get(key) or ()) for key, channel in LEGACY_CONTACT_KEYS.items()}
    return {"name": stored["name"], "contacts": {channel: ids for channel, ids in contacts.items() if ids}}


def approvers_of(decision: Decision) -> list[ApproverRecord]:
    """The approvers `decision` was opened with (none: only the local operator can decide it)."""
    return [read_approver(stored) for stored in json.loads(decision.approvers)]


def reaches(approver: ApproverRecord, channel: str, contact_id: str) -> bool:
    """Whether `contact_id` on `channel` is this approver."""
    return any(same_contact(channel, known, contact_id) for known in approver["contacts"].get(channel, ()))


def client_approver_name(grant: str) -> str:
    """The approver the person at a grant's MCP client votes (or denies) as: `client:<grant>`, bounded like the
    columns that keep who decided (200 characters)."""
    return bounded_text(f"{CLIENT}:{grant}", 200)


def approver_groups_of(decision: Decision) -> list[str]:
    """The groups `decision`'s rule named as approvers (`group:ops` -> ops), whose members at the identity provider
    may vote on it too (`Voter.groups`)."""
    return list(json.loads(decision.approver_groups or "[]"))
