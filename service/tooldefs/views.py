"""What the CLI, the REST API and the dashboard show of a tool's definition: one model for all three."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from service.models import ToolDefinition
from service.tooldefs import store
from service.tooldefs.definitions import unified_diff


def iso(ts: float) -> str:
    """Unix seconds as ISO 8601 UTC to the second, as decisions show their times."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ToolDefinitionView(BaseModel):
    """One upstream tool: the definition a person accepted, the one presented now, and how they differ."""

    server: str
    tool: str
    status: str = Field(
        description="accepted | changed (since accepted) | new (appeared after its server was first seen)"
    )
    current_sha256: str = Field(description="sha256 of the canonical JSON of the definition the upstream presents")
    accepted_sha256: str | None = Field(
        default=None, description="the accepted definition's hash; None: never accepted"
    )
    accepted_by: str | None = Field(
        default=None, description="who accepted it: a person, `local-operator` (CLI), or `first sight`"
    )
    accepted_via: str | None = Field(default=None, description="api | dashboard | cli | first_sight")
    accepted_at: str | None = None
    first_seen_at: str
    changed_at: str = Field(description="when the upstream first presented the current definition")
    current: dict[str, Any] | None = Field(default=None, description="the current definition (with details)")
    accepted: dict[str, Any] | None = Field(default=None, description="the accepted definition (with details)")
    diff: str | None = Field(default=None, description="unified diff, accepted to current (with details; whole)")

    @classmethod
    def of(cls, row: ToolDefinition, *, details: bool = False) -> ToolDefinitionView:
        view = cls(
            server=row.server,
            tool=row.tool,
            status=store.status_of(row),
            current_sha256=row.current_sha256,
            accepted_sha256=row.accepted_sha256,
            accepted_by=row.accepted_by,
            accepted_via=row.accepted_via,
            accepted_at=iso(row.accepted_at) if row.accepted_at is not None else None,
            first_seen_at=iso(row.first_seen_at),
            changed_at=iso(row.changed_at),
        )
        if details:
            current = store.definition_json(row.current_definition) or {}
            accepted = store.definition_json(row.accepted_definition)
            view.current, view.accepted = current, accepted
            view.diff = unified_diff(
                accepted,
                current,
                label=f"{row.server}/{row.tool}",
                accepted_sha256=row.accepted_sha256,
                current_sha256=row.current_sha256,
            )
        return view


class AcceptIn(BaseModel):
    """Accept a tool's current definition; `sha256` (recommended) must be the hash the person reviewed."""

    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="the reviewed definition's hash")


class AcceptedView(BaseModel):
    message: str
    previous_sha256: str | None
    definition: ToolDefinitionView
