"""Why a tool-definition request was refused, with the HTTP status the REST API answers it with."""

from __future__ import annotations


class ToolDefinitionError(Exception):
    """A refusal that changed nothing: the message says why, `status_code` is what the API answers."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownTool(ToolDefinitionError):
    status_code = 404


class NothingToAccept(ToolDefinitionError):
    """The current definition is already the accepted one."""

    status_code = 409


class StaleDefinition(ToolDefinitionError):
    """The definition the person reviewed (by its hash) is no longer the one the upstream presents."""

    status_code = 409
