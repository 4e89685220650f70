"""Contacts: how the policy names the ways to reach a person, as `{channel: id}`.

A person in the policy file has contacts by channel: the file's own keys `slack` and `email` (its public
format since the first version) and a generic `contacts: {channel: id}` for any other channel; a raw
approver is `<channel>:<id>` (`slack:U0123ABC`, `email:a@b.c`). What a valid id looks like is the channel's
business: each channel plug-in offers `check_contact`, and loading the plug-ins registers it here
(`register`), so the policy never imports a channel. The checks of the file's own keys are here from the
start, so `holdgate policy check` refuses a malformed Slack ID or address without loading any channel.

A channel with no check registered takes any id that is not empty and has no whitespace.
"""

from __future__ import annotations

from collections.abc import Callable

from service.policy.rules import is_email, is_slack_id

ContactCheck = Callable[[str], str | None]
"""None if the value is a valid contact id for the channel, else the problem in words."""


def check_slack_id(value: str) -> str | None:
    return None if is_slack_id(value) else f"{value!r} is not a Slack user ID (like U0123ABC)"


def check_email(value: str) -> str | None:
    return None if is_email(value) else f"{value!r} is not an email address"


def _check_any(value: str) -> str | None:
    return None if value and not any(c.isspace() for c in value) else f"{value!r} is not a contact id"


_CHECKS: dict[str, ContactCheck] = {"slack": check_slack_id, "email": check_email}
_CASE_INSENSITIVE = frozenset({"email"})
"""Channels whose ids compare without regard to case (addresses: `Bob@` is `bob@`)."""


def register(channel: str, check: ContactCheck) -> None:
    """A channel plug-in's contact check, for its `contacts` entries and `<channel>:<id>` approvers."""
    _CHECKS[channel] = check


def contact_channels() -> list[str]:
    """The channels a raw approver may name (`<channel>:<id>`), in the order they were registered."""
    return list(_CHECKS)


def check_contact(channel: str, value: str) -> str | None:
    """None if `value` is a valid id for `channel`, else the problem in words."""
    return _CHECKS.get(channel, _check_any)(value)


def same_contact(channel: str, a: str, b: str) -> bool:
    """Whether two ids of `channel` name the same contact."""
    return a.lower() == b.lower() if channel in _CASE_INSENSITIVE else a == b
