"""The approvers a decision keeps, and whether a voter is one of them.

A decision stores its approvers as JSON when it opens (the policy may change while it waits; the decision keeps
who could approve it then): a list of `{"name": "alice", "contacts": {"slack": ["U0ALICE"], "email": [...]}}`,
where each key of `contacts` is a channel's name and its ids are how that channel recognises the person. Rows
written before contacts were channel-neutral hold `{"name", "slack_ids", "emails"}`; `approvers_of` reads both
(and the migration `approver_contacts` rewrites the old form), so nothing else sees the old shape.

Matching knows no channel: a voter of kind `slack` matches the ids under `slack`, one of kind `email` those
under `email`, and so on for any channel. Ids shaped like an address (`someone@host`) compare without regard to
case, as mail systems treat them; every other id must be equal.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

from service.models import Decision
from service.policy import Approver

LEGACY_CONTACT_KEYS = {"slack_ids": "slack", "emails": "email"}
"""Where the old stored form kept each channel's ids: its key → the channel's name."""


class ApproverRecord(TypedDict):
    """One approver as a decision keeps it."""

    name: str
    contacts: dict[str, list[str]]
    """channel name → the person's ids on that channel (only channels where they have one)"""


def approver_json(approver: Approver) -> ApproverRecord:
    """The stored form of a policy approver.

    The policy's `Approver` still names its Slack ids and addresses (`slack_ids`, `emails`); this is the one
    place that turns them into contacts, so when the policy gives `Approver.contacts` only this changes.
    """
    contacts = {"slack": list(approver.slack_ids), "email": list(approver.emails)}
    return {"name": approver.name, "contacts": {channel: ids for channel, ids in contacts.items() if ids}}


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
    return any(_same_contact(known, contact_id) for known in approver["contacts"].get(channel, ()))


def _same_contact(known: str, given: str) -> bool:
    if known == given:
        return True
    return "@" in known and known.lower() == given.lower()  # an address: its case does not matter
