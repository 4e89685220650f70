"""The one interface every approval channel implements.

A channel turns the outbox's messages into something a person sees, and turns what the person
does back into a vote:

- `deliver(kind, decision, ref)`: `request` (a new decision wants a person), `reminder` (the
  timeout is near), `update` (it was decided anywhere, or the released call finished). Returns a
  reference to what it posted (a Slack `channel:ts`, a Message-ID) or None; `update` and `reminder`
  receive the `request`'s reference so they can edit the original. Raising means "try again
  later": the outbox retries with back-off, and a channel failure never decides anything.
- incoming actions (a Slack click, an email link) call `ApprovalService.vote` with a `Voter`
  naming who acted, as the channel verified them.
"""

from __future__ import annotations

from typing import Literal, Protocol, TypeGuard, get_args, runtime_checkable

from service.approvals.schemas import DecisionView
from service.approvals.service import ApprovalService

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

    `start` runs in the service's start-up, after the approvals service exists (inbound actions
    vote through it); `aclose` on shutdown. The gateway recognises such a channel with `isinstance`,
    which asks for both methods.
    """

    async def start(self, approvals: ApprovalService) -> None: ...

    async def aclose(self) -> None: ...
