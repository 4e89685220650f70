"""`config/servers.json`: the upstream MCP servers, in the `mcpServers` format of Claude Desktop / Cursor.

    {"mcpServers": {
        "jobs": {"command": "python", "args": ["examples/jobs_server.py"], "env": {"K": "${K}"}},
        "remote": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}}}}

An entry with `command` is a stdio child process; one with `url` is a Streamable HTTP server
(`"type"` may say `stdio` / `http` / `streamable-http`, as Claude Code writes it; the old SSE
transport is refused by name). `${VAR}` and `${VAR:-default}` in `command`, `args`, `env`, `cwd`,
`url` and `headers` are filled from the environment at load, so secrets stay out of the file. The
specs' reprs never show env or header values, args, nor the URL's userinfo and query: they are
where secrets live.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import pydantic

from service.configfile import ConfigError, format_location, load_json, validation_error_to_config_error

SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A name is a path segment of `/mcp/{server}` and a prefix in policy keys (`server/tool`)."""

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class StdioServerSpec:
    """An upstream started as a child process and spoken to over stdin/stdout."""

    name: str
    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    cwd: str | None = None

    def __repr__(self) -> str:
        return f"StdioServerSpec(name={self.name!r}, command={self.command!r}, env keys={sorted(self.env)})"


@dataclass(frozen=True, slots=True)
class HttpServerSpec:
    """An upstream reached over Streamable HTTP."""

    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        url = _url_for_display(self.url)
        return f"HttpServerSpec(name={self.name!r}, url={url!r}, header names={sorted(self.headers)})"


def _url_for_display(url: str) -> str:
    """The URL without what may be a secret filled in from ${VAR}: userinfo, query and fragment."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", "***" if parts.fragment else ""))


ServerSpec = StdioServerSpec | HttpServerSpec


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class _StdioEntry(_Strict):
    type: Literal["stdio"] | None = None
    command: Annotated[str, pydantic.StringConstraints(min_length=1)]
    args: list[str] = []
    env: dict[str, str] = {}
    cwd: str | None = None


class _HttpEntry(_Strict):
    type: Literal["http", "streamable-http", "streamableHttp"] | None = None
    url: pydantic.AnyHttpUrl
    headers: dict[str, str] = {}


class _ServersFile(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    mcpServers: dict[str, dict[str, Any]]


def load_servers(path: Path | str, environ: Mapping[str, str] | None = None) -> dict[str, ServerSpec]:
    """Read servers.json into specs by name; any problem is a ConfigError naming the place."""
    path = Path(path)
    environ = os.environ if environ is None else environ
    raw = load_json(path)
    try:
        document = _ServersFile.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise validation_error_to_config_error(path, exc, model=_ServersFile, show_input=False) from None
    return {name: _load_entry(path, name, entry, environ) for name, entry in document.mcpServers.items()}


def _load_entry(path: Path, name: str, entry: dict[str, Any], environ: Mapping[str, str]) -> ServerSpec:
    where = ("mcpServers", name)
    if not SERVER_NAME.match(name):
        raise ConfigError(
            path,
            format_location(where),
            "a server name must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit "
            "(it becomes the URL path /mcp/<name>)",
        )
    if entry.get("type") == "sse" or (entry.get("transport") == "sse"):
        raise ConfigError(
            path, format_location((*where, "type")), "the SSE transport is not supported; use Streamable HTTP"
        )
    has_command, has_url = "command" in entry, "url" in entry
    if has_command == has_url:
        raise ConfigError(
            path, format_location(where), 'give either "command" (a stdio server) or "url" (an HTTP server)'
        )
    entry = _expand(path, where, entry, environ)
    model = _StdioEntry if has_command else _HttpEntry
    try:
        parsed = model.model_validate(entry)
    except pydantic.ValidationError as exc:
        error = validation_error_to_config_error(path, exc, model=model, show_input=False)
        location = format_location(where) + ("." + error.location if error.location != "(file)" else "")
        raise ConfigError(path, location, error.message) from None
    if isinstance(parsed, _StdioEntry):
        return StdioServerSpec(name, parsed.command, tuple(parsed.args), dict(parsed.env), parsed.cwd)
    return HttpServerSpec(name, str(parsed.url), dict(parsed.headers))


def _expand(path: Path, where: tuple[str | int, ...], value: Any, environ: Mapping[str, str]) -> Any:
    """Fill `${VAR}` / `${VAR:-default}` in every string; an unset variable without default is an error."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            variable, default = match.group(1), match.group(2)
            if variable in environ:
                return environ[variable]
            if default is not None:
                return default
            raise ConfigError(
                path,
                format_location(where),
                f"environment variable {variable} is not set (used as ${{{variable}}})",
            )

        return _VARIABLE.sub(substitute, value)
    if isinstance(value, dict):
        return {key: _expand(path, (*where, key), item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(path, (*where, index), item, environ) for index, item in enumerate(value)]
    return value
