"""The channel names a rule's `approval.channels` may list.

The policy never imports a channel: the built-in names are known from the start (so `holdgate policy check`
knows them without loading any channel), and loading the channel plug-ins (`service.approvals.channels.
load_plugins`) adds each plug-in's name here, so a rule may name a channel added as a plug-in (`webhook`).
`dashboard` is no plug-in: it marks a decision as shown on the dashboard, which lists every pending one.
`client` is no plug-in either: it asks the person at the calling MCP client, inside the held request itself
(`service.gateway.client_approval`), so it has no address outside that request and nothing goes to the outbox.
"""

from __future__ import annotations

CLIENT = "client"
"""The channel (and the approver) that is the person at the calling MCP client (elicitation)."""

IN_BAND = frozenset({CLIENT})
"""Channels reached inside the held request, not through the outbox: no notification rows are queued for them."""

_NAMES: list[str] = ["console", "slack", "email", "dashboard", CLIENT]


def register(name: str) -> None:
    """A loaded channel plug-in's name (again is harmless)."""
    if name not in _NAMES:
        _NAMES.append(name)


def known() -> list[str]:
    """Every name a rule may list, built-ins first."""
    return list(_NAMES)


def check(name: str) -> str:
    """`name` if a rule may list it; otherwise the error pydantic shows at its place in the file."""
    if name not in _NAMES:
        *first, last = (repr(known_name) for known_name in _NAMES)
        raise ValueError(f"Input should be {', '.join(first)} or {last} (the loaded channels), not {name!r}")
    return name
