"""Settings: every knob of the service, read from `HOLDGATE_*` environment variables.

Nothing is read at import time: `get_settings()` builds (and caches) the object, and
`create_app(settings)` receives it, so tests construct `Settings(...)` directly.

The knobs of one area form a section (`settings.gateway`, `settings.audit`, `settings.approvals`), so a
part of the service takes the section it needs. The documented names stay flat (`HOLDGATE_APPROVAL_HOLD_S`
sets `settings.approvals.hold_s`): `FLAT_NAMES` is the one table from the public names to the sections.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from service.locations import DEFAULT_DATA_DIR, database_url

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
    max_request_body_bytes: int = Field(
        default=4 * 1024 * 1024, gt=0, description="The largest MCP request body accepted on /mcp (larger: HTTP 413)."
    )
    stream_keepalive_s: float = Field(
        default=15.0,
        gt=0,
        description="A call silent for this long gets its answer as an SSE stream, pinged at this interval "
        "(keep it below the idle-read timeout of any proxy in front of holdgate; 15 s is what the SDK's "
        "2026-era entry and sse-starlette use).",
    )
    upstream_connect_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long connecting to an upstream (starting a stdio server, or its HTTP initialize) may take.",
    )
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
    outbox_poll_interval_s: float = Field(
        default=1.0, description="How often the outbox looks for notifications to send (sooner when one is queued)."
    )
    outbox_max_attempts: int = Field(
        default=10, description="How many times a channel notification is tried before it is given up (logged)."
    )
    outbox_retry_base_s: float = Field(default=2.0, description="First retry delay of a failed notification; doubles.")


class LogSettings(BaseModel):
    """How the service writes its log (`service.logs`); the level is `holdgate serve --log-level`."""

    format: Literal["text", "json"] = Field(
        default="text",
        description="`text`: one readable line per event; `json`: one JSON object per line (time, level, logger, "
        "message, and request_id, grant, server, tool, decision_id where known), uvicorn's access lines included.",
    )


class OidcSettings(BaseModel):
    """Dashboard sign-in through the team's OpenID Connect provider (authorization code + PKCE).

    On when `issuer` is set. A signed-in person is the policy person whose `sso` (or, for an address, `email`)
    equals the ID token's `person_claim`; with `groups_claim`, the IdP's groups also count as the policy's
    `group:<name>` approvers.
    """

    issuer: str | None = Field(
        default=None,
        description="The provider's issuer URL (its /.well-known/openid-configuration is read from there); "
        "setting it turns OIDC sign-in on.",
    )
    client_id: str | None = Field(default=None, description="holdgate's client id at the provider.")
    client_secret: SecretStr | None = Field(
        default=None, description="holdgate's client secret (unset: a public client, PKCE only)."
    )
    scopes: str = Field(default="openid email profile", description="Scopes asked for at sign-in.")
    person_claim: str = Field(
        default="email",
        description="The claim that names the person: its value is matched against each policy person's `sso`, "
        "then (an address) their `email`. `email` or `sub` are the usual choices.",
    )
    groups_claim: str | None = Field(
        default=None,
        description="The claim holding the person's groups at the provider (often `groups`): `group:ops` in a rule's "
        "approvers then also means the provider's group ops. Unset: only the policy's groups count.",
    )
    token_sign_in: bool = Field(
        default=True,
        description="Keep the token sign-in form beside OIDC (for small setups and break-glass access).",
    )
    provider_logout: bool = Field(
        default=True,
        description="Signing out of the dashboard also ends the session at the provider (RP-initiated logout, when "
        "its metadata has an `end_session_endpoint`; register `<HOLDGATE_PUBLIC_URL>/login` as a post-logout "
        "redirect URI). Turn off for a provider that insists on `id_token_hint` (Okta).",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)


class OAuthSettings(BaseModel):
    """Agents authenticating with OAuth 2.1 access tokens (MCP authorization): holdgate as a resource server.

    On when `issuer` is set. A JWT access token is accepted for `/mcp/<server>` when the issuer's keys sign it,
    its `iss` is `issuer`, its `aud` is that server's URL (`<HOLDGATE_PUBLIC_URL>/mcp/<server>`), it has not
    expired and its `grant_claim` maps to a grant in `grants`. Static grant tokens (`hg_…`) keep working.
    """

    issuer: str | None = Field(
        default=None,
        description="The authorization server's issuer URL; setting it turns OAuth for agents on "
        "(needs HOLDGATE_PUBLIC_URL, which names the resources).",
    )
    jwks_url: str | None = Field(
        default=None,
        description="Where the issuer's signing keys are; unset: the `jwks_uri` of the issuer's metadata.",
    )
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"],
        description="Signature algorithms accepted on access tokens (never `none` or a shared-secret HS*).",
    )
    grant_claim: str = Field(
        default="client_id", description="The token claim that names the agent (`client_id` or `sub`)."
    )
    grants: dict[str, str] = Field(
        default_factory=dict,
        description='Which grant each agent is, as JSON: {"<value of grant_claim>": "<grant name>"}. '
        "A token whose claim is not here is refused with 403.",
    )
    acting_for_claim: str | None = Field(
        default=None,
        description="A token claim naming the person the agent acts for (e.g. `email`), for `four_eyes` rules; "
        "a grant's own `acting_for` in the policy wins over it.",
    )
    scopes: list[str] = Field(
        default_factory=list, description="Scopes advertised in the protected resource metadata (none: not listed)."
    )
    leeway_s: float = Field(
        default=30.0, ge=0, le=300, description="Clock skew tolerated on a token's exp, nbf and iat, in seconds."
    )

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)


class PolicySettings(BaseModel):
    """Where the policy's companion files are (the policy itself is `policy.json` in the config directory)."""

    shadow_path: Path | None = Field(
        default=None,
        description="A candidate policy evaluated beside the enforced one on every call, never enforced "
        "(shadow rules: disagreements go to the audit and /metrics); default `policy.shadow.json` in the "
        "config directory. A missing file means no shadow; a broken one pauses shadowing, never the policy.",
    )


class ToolDefinitionSettings(BaseModel):
    """How replicas learn of tool definitions recorded or accepted elsewhere (`service.tooldefs`)."""

    refresh_s: float = Field(
        default=5.0,
        gt=0,
        allow_inf_nan=False,
        description="How often each process re-reads the tool definitions' hashes from the database, so an accept "
        "made on another replica or with the CLI lets calls through here within this time (held meanwhile).",
    )


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
    "shadow_policy_path": ("policy", "shadow_path"),
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
    "log_format": ("logs", "format"),
    **{f"oidc_{name}": ("oidc", name) for name in OidcSettings.model_fields if name != "token_sign_in"},
    "token_sign_in": ("oidc", "token_sign_in"),
    **{f"oauth_{name}": ("oauth", name) for name in OAuthSettings.model_fields},
    "tool_definitions_refresh_s": ("tool_definitions", "refresh_s"),
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

    config_dir: Path = Field(default=Path("config"), description="Where policy.json and servers.json live.")
    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        description="Where the default SQLite database lives (created 0700, the file 0600), and the operator socket.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is a SQLite file in data_dir. postgresql+asyncpg://... or "
        "postgresql+psycopg://... for several replicas.",
    )
    host: str = Field(default="127.0.0.1", description="The interface `holdgate serve` listens on.")
    port: int = Field(default=8000, description="The port `holdgate serve` listens on.")
    public_url: str | None = Field(
        default=None,
        description="The URL people reach the service at (links in approval requests, email links, the client "
        "channel's URL mode), e.g. https://holdgate.example.com.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs email links and dashboard sessions, and keys the audit's arguments digest; the same on "
        "every replica. Unset: a key per process for sessions (they end on restart), a key stored once in the "
        "database for the digest, and no email approvals.",
    )
    watch_policy: bool = Field(
        default=True,
        description="Reload policy.json when it changes (SIGHUP always does); log a warning naming the servers "
        "that changed in servers.json (those apply on restart).",
    )
    run_migrations: bool = Field(
        default=True, description="Apply schema migrations at start-up (`holdgate db upgrade` does it by hand)."
    )
    operator_socket: bool = Field(
        default=True,
        description="Answer the local operator's `holdgate approve`, `deny` and `decisions list` on "
        "data_dir/holdgate.sock (mode 0600, this user only): on the service's host they then start in a fraction of "
        "the time they take opening the database themselves.",
    )

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    logs: LogSettings = Field(default_factory=LogSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    oauth: OAuthSettings = Field(default_factory=OAuthSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    tool_definitions: ToolDefinitionSettings = Field(default_factory=ToolDefinitionSettings)
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

    @model_validator(mode="after")
    def _identity_complete(self) -> Settings:
        if self.oidc.enabled and not self.oidc.client_id:
            raise ValueError("HOLDGATE_OIDC_ISSUER is set but HOLDGATE_OIDC_CLIENT_ID is not: both are needed")
        for name, value in (("HOLDGATE_OIDC_ISSUER", self.oidc.issuer), ("HOLDGATE_OAUTH_ISSUER", self.oauth.issuer)):
            if value is not None and not value.startswith(("https://", "http://")):
                raise ValueError(f"{name} must be an http(s) URL, not {value!r}")
        if self.oauth.enabled and not self.public_url:
            raise ValueError(
                "HOLDGATE_OAUTH_ISSUER is set but HOLDGATE_PUBLIC_URL is not: access tokens are checked against the "
                "URL clients reach each server at (<HOLDGATE_PUBLIC_URL>/mcp/<server>)"
            )
        unsafe = sorted({a for a in self.oauth.algorithms if a.lower() == "none" or a.upper().startswith("HS")})
        if unsafe:
            raise ValueError(
                f"HOLDGATE_OAUTH_ALGORITHMS may not allow {', '.join(unsafe)}: access tokens must be signed with "
                "the issuer's published keys"
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
    def shadow_policy_path(self) -> Path:
        """The shadow policy file (`HOLDGATE_SHADOW_POLICY_PATH`, else `policy.shadow.json` beside policy.json)."""
        return (
            self.policy.shadow_path if self.policy.shadow_path is not None else self.config_dir / "policy.shadow.json"
        )

    @property
    def servers_path(self) -> Path:
        return self.config_dir / "servers.json"

    @property
    def catalog_dir(self) -> Path:
        return self.config_dir / "catalog"

    @property
    def effective_database_url(self) -> str:
        return database_url(self.data_dir, self.database_url)


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
                try:
                    value = self.decode_complex_value(name, field, value)  # a JSON list, as for any list setting
                except ValueError as exc:
                    raise SettingsError(f"{(prefix + flat).upper()} is not valid JSON ({exc})") from None
            given = data.get(section)
            nested = given.model_dump() if isinstance(given, BaseModel) else dict(given or {})
            nested.setdefault(name, value)  # the nested form (`HOLDGATE_APPROVALS__HOLD_S`) of the same source wins
            data[section] = nested
        return data


SECTIONS: dict[str, type[BaseModel]] = {
    "gateway": GatewaySettings,
    "audit": AuditSettings,
    "approvals": ApprovalSettings,
    "logs": LogSettings,
    "oidc": OidcSettings,
    "oauth": OAuthSettings,
    "policy": PolicySettings,
    "tool_definitions": ToolDefinitionSettings,
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


def env_name(settings_cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str | None:
    """The environment variable that sets the field at `loc` of `settings_cls` (None for a whole-model check).

    A section's field is named by its documented flat name when it has one (`HOLDGATE_APPROVAL_HOLD_S`), else
    by the nested form (`HOLDGATE_GATEWAY__MAX_REQUEST_BODY_BYTES`); a list item by its list's variable.
    """
    names = [str(part) for part in loc if isinstance(part, str)]
    if not names:
        return None
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    if settings_cls is Settings and len(names) > 1 and names[0] in SECTIONS:
        flat = next((f for f, place in FLAT_NAMES.items() if place == (names[0], names[1])), None)
        if flat is not None:
            return (prefix + flat).upper()
        return (prefix + "__".join(names[:2])).upper()
    return (prefix + names[0]).upper()


def settings_error(exc: BaseException) -> str | None:
    """One line saying which environment variable is wrong and why, for an error raised while reading settings
    (`Settings()` or a channel's settings section); None for any other exception.

    The value itself is never repeated: it may be a secret (`hide_input_in_errors`).
    """
    from pydantic import ValidationError

    if isinstance(exc, SettingsError):  # a list setting that is not JSON: pydantic-settings names the field
        field = re.match(r'error parsing value for field "(\w+)" from source "(?:Env|DotEnv)SettingsSource"', str(exc))
        known = field is not None and field[1] in Settings.model_fields
        where = f"{env_name(Settings, (field[1],))} is not valid JSON" if field and known else str(exc)
        return f'{where} (a list setting is a JSON list, e.g. \'["a", "b"]\')'
    if not isinstance(exc, ValidationError):
        return None
    settings_cls = next((cls for cls in _settings_classes(BaseSettings) if cls.__name__ == exc.title), None)
    if settings_cls is None:
        return None
    problems = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        name = env_name(settings_cls, tuple(error["loc"]))
        problems.append(f"{name}: {message}" if name else message)
    return "; ".join(problems)


def _settings_classes(base: type[BaseSettings]) -> list[type[BaseSettings]]:
    """Every loaded settings class (the service's and the channels' sections)."""
    found = []
    for cls in base.__subclasses__():
        found += [cls, *_settings_classes(cls)]
    return found
