"""Tool risk catalogs: how risky each tool of a known server is.

holdgate ships catalogs for the servers its docs use (`service/catalog/shipped/`, package data, so an
installed holdgate has them); a config directory's `catalog/*.json` come first and a file there with
a shipped file's name replaces it. Without a `catalog/` directory the shipped catalogs still apply.

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

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
"""The catalogs that come with holdgate (package data: found from a source tree and an installed package)."""


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
    def load(cls, directory: Path, *, shipped: Path = SHIPPED_DIR) -> Catalogs:
        """Read `directory/*.json` (if it exists), then the shipped catalogs not replaced by a file of
        the same name there; a malformed catalog is a ConfigError naming the file and place."""
        own = sorted(directory.glob("*.json")) if directory.is_dir() else []
        replaced = {path.name for path in own}
        builtin = [path for path in sorted(shipped.glob("*.json")) if path.name not in replaced]
        return cls([load_catalog(path) for path in [*own, *builtin]])

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
