"""The seam between the approvals domain and the channels that reach people: the interfaces a channel
implements and the one list the service loads them from.

A channel turns the outbox's messages into something a person sees, and turns what the person does back
into a vote:

- `deliver(kind, decision, ref)`: `request` (a new decision wants a person), `reminder` (the timeout is
  near), `update` (it was decided anywhere, or the released call finished). Returns a reference to what it
  posted (a Slack `channel:ts`, a Message-ID) or None; `update` and `reminder` receive the `request`'s
  reference so they can edit the original. Raising means "try again later": the outbox retries with
  back-off, and a channel failure never decides anything.
- incoming actions (a Slack click, an email link) vote through the `ApprovalService` the channel was
  started with, with a `Voter` naming who acted, as the channel verified them.

Channels are plug-ins: the service never imports `bots/`. It imports each module named in
`Settings.channels` (`"bots.slack"`, or a package of your own) and takes its `plugin`, a `ChannelPlugin`.
Adding a channel is its own folder, one line in that list, and its own settings section.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol, TypeGuard, get_args, runtime_checkable

from service.policy import channel_names, contacts

if TYPE_CHECKING:
    import typer
    from fastapi import APIRouter

    from service.approvals.schemas import DecisionView
    from service.approvals.service import ApprovalService
    from service.settings import Settings

MessageKind = Literal["request", "reminder", "update"]
MESSAGE_KINDS: frozenset[str] = frozenset(get_args(MessageKind))


def is_message_kind(kind: str) -> TypeGuard[MessageKind]:
    """Whether an outbox row's `kind` (a plain string column) is one a channel knows how to deliver."""
    return kind in MESSAGE_KINDS


class Channel(Protocol):
    name: str

    async def deliver(self, kind: MessageKind, decision: DecisionView, ref: str | None) -> str | None: ...


@runtime_checkable
class ChannelLifecycle(Protocol):
    """Optional: a channel with background work (Socket Mode, a connection pool) also has these.

    `start` runs in the service's start-up, after the approvals service exists (inbound actions vote
    through it); `aclose` on shutdown. The service recognises such a channel with `isinstance`, which
    asks for both methods.
    """

    async def start(self, approvals: ApprovalService) -> None: ...

    async def aclose(self) -> None: ...


class ChannelPlugin(Protocol):
    """What a channel module exposes as `plugin`.

    - `name`: the channel's name in a rule's `approval.channels`, in outbox rows, and as the key of a
      person's contact in the policy (`people.alice.<name>`, `<name>:<id>` approvers) where it has one.
    - `build(settings)`: the channel, or None when it is not configured (Slack without a token); raises
      `ValueError` naming the settings to fix when it is configured wrongly (start-up refuses).
    - `router`: the channel's inbound HTTP (Slack's interactions, email's confirmation page), or None.
    - `check_contact(value)`: None if `value` is a valid contact id for this channel (a Slack user id, an
      address), else the problem in words; None as the attribute itself means the channel has no contacts.
    """

    name: str
    router: APIRouter | None
    check_contact: Callable[[str], str | None] | None

    def build(self, settings: Settings) -> Channel | None: ...


@runtime_checkable
class ChannelCommands(Protocol):
    """Optional: a plugin with commands of its own (`holdgate slack check`) also has `cli`, a typer app the
    command line adds under the plugin's name. The CLI recognises such a plugin with `isinstance`."""

    cli: typer.Typer


def load_plugins(modules: Sequence[str]) -> list[ChannelPlugin]:
    """Import each module of `modules` and take its `plugin`; a name that does not import, or a module
    without a plugin, is a configuration error naming it."""
    plugins: list[ChannelPlugin] = []
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"HOLDGATE_CHANNELS: cannot import channel module {module_name!r}: {exc}") from exc
        plugin = getattr(module, "plugin", None)
        if plugin is None:
            raise ValueError(f"HOLDGATE_CHANNELS: module {module_name!r} has no `plugin` (a ChannelPlugin)")
        if any(existing.name == plugin.name for existing in plugins):
            raise ValueError(f"HOLDGATE_CHANNELS: two modules provide the channel {plugin.name!r}")
        channel_names.register(plugin.name)  # a rule may list it
        if plugin.check_contact is not None:  # the policy checks this channel's contacts with it
            contacts.register(plugin.name, plugin.check_contact)
        plugins.append(plugin)
    return plugins
