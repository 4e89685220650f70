"""Tool definitions: each upstream tool's definition pinned when first seen; changes held until a person accepts.

`ToolDefinitions` (the registry) keeps what this process knows in memory for the call path and records what
upstreams present; `store` reads and writes the tables (and accepts a definition, audited); `definitions` is
the pinned form, its hash and the diff. What a call to a changed tool gets is the policy's (`on_tool_change`,
`service.policy.with_tool_change`); the gateway puts the two together.
"""

from service.tooldefs.definitions import DIFF_LIMIT_CHARS, definition_of, definition_sha256, unified_diff
from service.tooldefs.errors import NothingToAccept, StaleDefinition, ToolDefinitionError, UnknownTool
from service.tooldefs.registry import ToolDefinitions, note_of
from service.tooldefs.store import accept, get, listing, status_of
from service.tooldefs.views import AcceptedView, AcceptIn, ToolDefinitionView

__all__ = [
    "DIFF_LIMIT_CHARS",
    "AcceptIn",
    "AcceptedView",
    "NothingToAccept",
    "StaleDefinition",
    "ToolDefinitionError",
    "ToolDefinitionView",
    "ToolDefinitions",
    "UnknownTool",
    "accept",
    "definition_of",
    "definition_sha256",
    "get",
    "listing",
    "note_of",
    "status_of",
    "unified_diff",
]
