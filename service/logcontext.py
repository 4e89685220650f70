"""What a log line is about: the request, grant, server, tool and decision in hand when it was written.

The fields live in one context variable, set where they become known: the HTTP edge (`request_id`), a
tools/call's entry in the gateway (`grant`, `server`, `tool`), the hold and every change of a decision
(`decision_id`). Each asyncio task has its own copy, so concurrent calls never see each other's fields, and a
task started during a call (the SDK's, a timer's) inherits them. `ContextFilter` copies them onto every log
record, where the JSON log format (`service.logs`) writes them; the text format leaves them out.

Values are identifiers only (the request id, names, a decision id): never arguments, tokens or people's
contacts.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import cast

from opentelemetry import context as trace_context

FIELDS = ("request_id", "grant", "server", "tool", "decision_id")
"""The fields a record may carry, in the order the JSON format writes them."""

_EMPTY: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("holdgate_log_context", default=_EMPTY)

REQUEST_ID_SCOPE_KEY = "holdgate.request_id"
"""Where the HTTP edge leaves the request's id on an MCP request's ASGI scope: the SDK runs a session's handlers
in tasks of its own, which do not inherit the request's context, so a tools/call reads it from there."""
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
"""A client's own `X-Request-ID` is kept when it is this plain (no spaces, quotes or line breaks to forge a log
line with); any other value is replaced by one of ours."""


def current() -> Mapping[str, str]:
    """The fields known in this task now."""
    return _context.get()


class bound:
    """`fields` (None ones left out) added for the block, then the fields from before restored.

    A class rather than a generator-based context manager: it runs on every tools/call (a third of the cost)."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: str | None) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        fields: Mapping[str, str | None] = self._fields
        if None in fields.values():
            fields = {name: value for name, value in fields.items() if value is not None}
        current = _context.get()
        merged = {**current, **fields} if current else fields  # `fields` is this block's own dict: never changed
        self._token = _context.set(cast("Mapping[str, str]", merged))

    def __exit__(self, *exc_info: object) -> None:
        _context.reset(self._token)


def bind(**fields: str | None) -> None:
    """`fields` added until the enclosing `bound` block (or the task) ends: for a value learned mid-call."""
    _context.set({**_context.get(), **{name: value for name, value in fields.items() if value is not None}})


def detached() -> contextvars.Context:
    """A copy of the current context without the call's log fields and trace, for work that outlives the call
    that happens to start it: an upstream session, a timer, a shared worker (`asyncio.create_task(...,
    context=detached())`, `detached().run(scheduler.add_job, ...)`). Its lines are not about that call."""
    context = contextvars.copy_context()
    context.run(_forget)
    return context


def _forget() -> None:
    _context.set(_EMPTY)
    trace_context.attach(trace_context.Context())


def request_id_from(header: bytes | None) -> str:
    """The request's id: the client's `X-Request-ID` when it is plain enough to log, else a new random one."""
    if header is not None:
        text = header.decode("latin-1")
        if _REQUEST_ID.fullmatch(text):
            return text
    return secrets.token_hex(16)


class ContextFilter(logging.Filter):
    """Puts the task's fields on each record (a field the record already has, from `extra=`, wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True
