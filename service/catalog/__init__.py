"""Tool risk catalogs (`config/catalog/*.json`): how risky each tool of a known server is.

Advice for people — the Slack message, the dashboard, `policy init` — never a policy: the policy file
alone decides. The format is documented in `config/catalog/README.md`. A catalog applies to an
upstream whose `initialize` result matches its `match` (only `serverInfo.name` so far), or, without
`match` or when the server's info is not known, to the upstream named like its `server`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pydantic

from service.configfile import load_json, validation_error_to_config_error

Risk = Literal["read", "write", "destructive"]
Level = Literal["low", "medium", "high"]


class _ToolIn(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    risk: Risk
    level: Level
    note: str


class _CatalogIn(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    server: str
    match: dict[str, str] = {}
    note: str | None = None
    tools: dict[str, _ToolIn]


@dataclass(frozen=True, slots=True)
class ToolRisk:
    risk: Risk
    level: Level
    note: str
    catalog: str

    def describe(self) -> str:
        return f"{self.risk}, {self.level} risk: {self.note}"


@dataclass(frozen=True, slots=True)
class Catalog:
    path: Path
    server: str
    server_info_name: str | None
    tools: dict[str, ToolRisk]


class Catalogs:
    """Every catalog in a directory; `risk(server, tool)` finds the tool's entry."""

    def __init__(self, catalogs: list[Catalog]) -> None:
        self.catalogs = catalogs

    @classmethod
    def load(cls, directory: Path) -> Catalogs:
        """Read `directory/*.json`; a malformed catalog is a ConfigError naming the file and place."""
        if not directory.is_dir():
            return cls([])
        return cls([load_catalog(path) for path in sorted(directory.glob("*.json"))])

    def risk(self, server: str, tool: str, *, server_info_name: str | None = None) -> ToolRisk | None:
        for catalog in self._for(server, server_info_name):
            if tool in catalog.tools:
                return catalog.tools[tool]
        return None

    def _for(self, server: str, server_info_name: str | None) -> list[Catalog]:
        by_info = [c for c in self.catalogs if server_info_name and c.server_info_name == server_info_name]
        by_name = [c for c in self.catalogs if c.server == server and c not in by_info]
        return by_info + by_name


def load_catalog(path: Path) -> Catalog:
    try:
        parsed = _CatalogIn.model_validate(load_json(path))
    except pydantic.ValidationError as exc:
        raise validation_error_to_config_error(path, exc, model=_CatalogIn) from None
    tools = {name: ToolRisk(t.risk, t.level, t.note, path.name) for name, t in parsed.tools.items()}
    return Catalog(path, parsed.server, parsed.match.get("serverInfo.name"), tools)
