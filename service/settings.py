"""Settings: every knob of the service, read from `HOLDGATE_*` environment variables.

Nothing is read at import time: `get_settings()` builds (and caches) the object, and
`create_app(settings)` receives it, so tests construct `Settings(...)` directly.

The knobs of one area form a section (`settings.gateway`, `settings.audit`, `settings.approvals`), so a
part of the service takes the section it needs. The documented names stay flat (`HOLDGATE_APPROVAL_HOLD_S`
sets `settings.approvals.hold_s`): `FLAT_NAMES` is the one table from the public names to the sections.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

Section = TypeVar("Section", bound=BaseModel)

DEFAULT_CHANNELS = ("bots.console", "bots.slack", "bots.email", "bots.webhook")
"""The channel modules the service loads (`service.approvals.channels`): a new channel is one line here."""


class GatewaySettings(BaseModel):
    """How the gateway serves MCP: who may connect, how many sessions, how calls reach upstreams."""

    anonymous_dev_grant: bool = Field(
        default=False,
        description="Let loopback clients without a token in, as grant 'anonymous-dev'. "
        "Refused unless the service binds to a loopback address.",
    )
    tools_list_filter: bool = Field(
        default=True,
        description="Show each grant only the tools its policy lets it call.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Extra Host header values accepted on /mcp (DNS-rebinding guard)."
    )
    max_request_body_bytes: int = 4 * 1024 * 1024
    stream_keepalive_s: float = Field(
        default=15.0,
        gt=0,
        description="A call silent for this long gets its answer as an SSE stream, pinged at this interval "
        "(keep it below the idle-read timeout of any proxy in front of holdgate; 15 s is what the SDK's "
        "2026-era entry and sse-starlette use).",
    )
    upstream_connect_timeout_s: float = 30.0
    upstream_connections: int = Field(
        default=100,
        gt=0,
        description="Connections per upstream HTTP session for tools/call; more calls in flight at once "
        "queue for one (a burst of released calls reuses them instead of opening one each). Raise it "
        "when one agent session keeps more long-running calls open at once.",
    )
    max_sessions: int = Field(
        default=40,
        gt=0,
        description="Open MCP sessions (2025-era, with an Mcp-Session-Id) across all servers and grants; a new "
        "session beyond it gets HTTP 503. Each may own a stdio child process (~40-70 MB for a Python server): "
        "40 fit a 2-core, 4 GB host with room for the database and the OS.",
    )
    max_sessions_per_grant: int = Field(
        default=10,
        gt=0,
        description="Open MCP sessions one grant may hold at once; a new one beyond it gets HTTP 429, so one "
        "runaway agent cannot take every slot of HOLDGATE_MAX_SESSIONS.",
    )
    session_idle_s: float = Field(
        default=600.0,
        gt=0,
        allow_inf_nan=False,
        description="A session with no request in flight for this long is closed, with its upstream session "
        "(and stdio child process); the client's next request gets 404 and it opens a new session.",
    )
    stdio_spares: bool = Field(
        default=True,
        description="Keep one started, initialized child process per stdio server, handed to the next new "
        "session so its first call does not wait for the server to start.",
    )


class AuditSettings(BaseModel):
    """How the audit writer commits and how long records are kept."""

    flush_interval_s: float = Field(
        default=1.0,
        description="how often the audit writer commits what it has queued (sooner when 500 are waiting); "
        "each commit costs the event loop a few ms whatever its size",
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Delete audit records older than this many days (checked hourly); unset keeps them all. "
        "The hash chain stays verifiable: the last deleted record's hash becomes its anchor.",
    )


class ApprovalSettings(BaseModel):
    """How held calls wait, how decisions expire and are claimed, how notifications are retried."""

    progress_interval_s: float = Field(
        default=10.0, description="How often a held call with a progress token hears 'still waiting'."
    )
    hold_s: float = Field(
        default=45.0,
        description="How long a held call without a progress token waits before answering 'approval pending' "
        "(below the ~60 s after which common clients give up).",
    )
    sweep_interval_s: float = Field(default=5.0, description="How often overdue decisions are expired.")
    poll_interval_s: float = Field(
        default=1.0, description="How often held calls look for decisions taken in another process (CLI, replicas)."
    )
    claim_lease_s: float = Field(
        default=15.0,
        gt=0,
        description="How long the claim of an approved call outlives its replica: a call claimed by a replica that "
        "died is given back (not sent yet) or marked outcome unknown (sent) this long after its last renewal.",
    )
    outbox_poll_interval_s: float = 1.0
    outbox_max_attempts: int = 10
    outbox_retry_base_s: float = Field(default=2.0, description="First retry delay of a failed notification; doubles.")


class TaskSettings(BaseModel):
    """Held calls as MCP tasks (2025-11-25 tasks, the 2026-07-28 tasks extension)."""

    enabled: bool = Field(
        default=True,
        description="Declare and serve tasks: a client that asks for one gets a task for a held call at once.",
    )
    poll_interval_ms: int = Field(
        default=5000, ge=100, le=3_600_000, description="The pollInterval a task suggests to its client (ms)."
    )
    keep_s: float = Field(
        default=3600.0,
        gt=0,
        le=30 * 86400,
        description="How long an ended task stays readable: a task's ttl is at least its decision's expiry, plus the "
        "rule's claim_within, plus this.",
    )
    max_ttl_s: float = Field(
        default=7 * 86400.0, gt=0, le=30 * 86400, description="The longest ttl a task gets, whatever the client asks."
    )
    purge_interval_s: float = Field(default=60.0, gt=0, description="How often tasks past their ttl are deleted.")


FLAT_NAMES: dict[str, tuple[str, str]] = {
    **{name: ("gateway", name) for name in GatewaySettings.model_fields},
    "audit_flush_interval_s": ("audit", "flush_interval_s"),
    "audit_retention_days": ("audit", "retention_days"),
    "approval_progress_interval_s": ("approvals", "progress_interval_s"),
    "approval_hold_s": ("approvals", "hold_s"),
    "approval_sweep_interval_s": ("approvals", "sweep_interval_s"),
    "approval_poll_interval_s": ("approvals", "poll_interval_s"),
    "claim_lease_s": ("approvals", "claim_lease_s"),
    "outbox_poll_interval_s": ("approvals", "outbox_poll_interval_s"),
    "outbox_max_attempts": ("approvals", "outbox_max_attempts"),
    "outbox_retry_base_s": ("approvals", "outbox_retry_base_s"),
    "tasks_enabled": ("tasks", "enabled"),
    "task_poll_interval_ms": ("tasks", "poll_interval_ms"),
    "task_keep_s": ("tasks", "keep_s"),
}
"""The documented flat names (README "Configuration": `HOLDGATE_<NAME>`) of the sections' fields, as
(section, field). They stay the public names: an environment variable, a .env line or a keyword argument
(`Settings(approval_hold_s=30)`) under a flat name sets the section's field; `HOLDGATE_APPROVALS__HOLD_S`
(the nested form) works too."""


class Settings(BaseSettings):
    """The service's configuration; see README "Configuration" for each variable.

    Knobs of one area sit in a section (`settings.gateway`, `settings.audit`, `settings.approvals`), each
    still set by its documented flat name (`FLAT_NAMES`); channels have their own (`section`).
    """

    model_config = SettingsConfigDict(
        env_prefix="HOLDGATE_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # the input holds every secret (SMTP password, tokens): never echo it
    )

    config_dir: Path = Path("config")
    data_dir: Path = Path("data")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is a SQLite file in data_dir.",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None
    secret_key: SecretStr | None = None
    watch_policy: bool = True
    run_migrations: bool = True

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    tasks: TaskSettings = Field(default_factory=TaskSettings)

    # Channels
    channels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CHANNELS),
        description="The channel modules to load, as a JSON list of module names; each exposes a `plugin` "
        "(service.approvals.channels.ChannelPlugin). Add your own package's module to add a channel.",
    )
    channel_settings: dict[str, BaseModel] = Field(
        default_factory=dict,
        exclude=True,
        description="Channel settings sections given in code (tests), by channel name; a channel not named "
        "here reads its own section from the environment (see `section`).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = (init_settings, env_settings, dotenv_settings, file_secret_settings)
        return tuple(_FlatNames(settings_cls, source) for source in sources)

    @model_validator(mode="after")
    def _refuse_remote_anonymous(self) -> Settings:
        if self.gateway.anonymous_dev_grant and not is_loopback_host(self.host):
            raise ValueError(
                f"HOLDGATE_ANONYMOUS_DEV_GRANT is only allowed on a loopback address, not on {self.host!r}"
            )
        return self

    def section(self, name: str, kind: type[Section]) -> Section:
        """A channel's settings section: the one given in `channel_settings`, else `kind()`, which reads its
        own `HOLDGATE_<CHANNEL>_*` variables (a pydantic-settings class in the channel's folder)."""
        given = self.channel_settings.get(name)
        if given is None:
            return kind()
        if not isinstance(given, kind):
            raise TypeError(f"channel_settings[{name!r}] is a {type(given).__name__}, not a {kind.__name__}")
        return given

    @property
    def policy_path(self) -> Path:
        return self.config_dir / "policy.json"

    @property
    def servers_path(self) -> Path:
        return self.config_dir / "servers.json"

    @property
    def catalog_dir(self) -> Path:
        return self.config_dir / "catalog"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'holdgate.db').resolve()}"


class _FlatNames(PydanticBaseSettingsSource):
    """One source of settings (keyword arguments, the environment, the .env file) with its flat names
    (`FLAT_NAMES`) moved into their sections; the sources' order of precedence is kept, field by field."""

    def __init__(self, settings_cls: type[BaseSettings], source: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.source = source

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: `__call__` answers for the whole source

    def __call__(self) -> dict[str, Any]:
        data = dict(self.source())
        env_vars: Mapping[str, str | None] = getattr(self.source, "env_vars", {})
        prefix = str(self.config.get("env_prefix", "")).lower()
        for flat, (section, name) in FLAT_NAMES.items():
            if flat in data:  # a keyword argument, or a .env line (the .env source passes unknown names on)
                value = data.pop(flat)
            elif prefix + flat in env_vars:  # an environment variable (names in lower case: case-insensitive)
                value = env_vars[prefix + flat]
            else:
                continue
            field = SECTIONS[section].model_fields[name]
            if isinstance(value, str) and self.field_is_complex(field):
                value = self.decode_complex_value(name, field, value)  # a JSON list, as for any list setting
            given = data.get(section)
            nested = given.model_dump() if isinstance(given, BaseModel) else dict(given or {})
            nested.setdefault(name, value)  # the nested form (`HOLDGATE_APPROVALS__HOLD_S`) of the same source wins
            data[section] = nested
        return data


SECTIONS: dict[str, type[BaseModel]] = {
    "gateway": GatewaySettings,
    "audit": AuditSettings,
    "approvals": ApprovalSettings,
    "tasks": TaskSettings,
}

PLACEHOLDER_SECRETS = frozenset({"changethis", "changeme", "change-me", "secret", "secret-key", "xxxxxxxxxxxxxxxx"})


def is_loopback_host(host: str) -> bool:
    """True for addresses only this machine can reach."""
    return host in {"127.0.0.1", "localhost", "::1"} or host.startswith("127.")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
