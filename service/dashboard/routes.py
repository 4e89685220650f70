"""The dashboard at `/`: server-rendered pages over the same services as the API and the CLI.

Pages: sign-in, the pending queue (live), history of decisions and calls (filters, plots, export),
a decision's whole story, and the rules per upstream tool with `policy explain`. Votes go through
`ApprovalService.vote(..., via="dashboard")` like every other channel; nothing here writes a
decision itself. Everything but /login and /static needs a signed-in person (see `auth.py`).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from starlette.templating import Jinja2Templates

from service.api.deps import ApprovalsDep, get_state
from service.api.params import MAX_OFFSET, as_utc, refuse_nul
from service.approvals import (
    STATUSES,
    ApprovalError,
    ApprovalService,
    DecisionQuery,
    DecisionView,
    EditRefused,
    Voter,
    iso,
)
from service.audit import service as audit_service
from service.dashboard import plots, queries
from service.dashboard.auth import (
    CsrfViewerDep,
    Viewer,
    ViewerDep,
    csrf_ok,
    new_session,
    read_session,
    record_sign_in_failure,
    safe_next,
    sign_in_keys,
    sign_in_wait,
    sign_out,
    write_session,
)
from service.dashboard.standing import standing_choice
from service.dashboard.state import DashboardDep
from service.grants.service import token_sha256
from service.models import AuditEvent, Decision, Vote
from service.policy import explain
from service.tooldefs import ToolDefinitionError, ToolDefinitionView, get, listing, status_of
from service.tooldefs import accept as accept_definition

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False, dependencies=[Depends(refuse_nul)])
VERDICTS = ("allowed", "approved", "denied", "rate_limited", "pending", "expired", "cancelled")
PAGE = 100


def _ts(value: float | None) -> str:
    return iso(value).replace("T", " ") if value is not None else ""


def _dt(value: datetime | None) -> str:
    if value is None:
        return ""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


templates.env.filters["ts"] = _ts
templates.env.filters["dt"] = _dt
templates.env.filters["duration"] = _duration
templates.env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def _render(request: Request, viewer: Viewer, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context |= {"viewer": viewer, "csrf": viewer.csrf, "path": request.url.path}
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers["cache-control"] = "no-store"
    response.headers["x-frame-options"] = "DENY"
    response.headers["referrer-policy"] = "same-origin"
    return response


# -- static files and sign-in ---------------------------------------------------------------------


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    path = (STATIC / name).resolve()
    if path.parent != STATIC.resolve() or not path.is_file():
        raise HTTPException(status_code=404)
    return FileResponse(path, headers={"cache-control": "no-cache"})


def render_login(request: Request, viewer: Viewer, target: str, error: str | None, status: int = 200) -> Response:
    """The sign-in page: the identity provider's button (OIDC on) and the token form (unless turned off)."""
    oidc = get_state(request).settings.oidc
    response: Response = _render(
        request,
        viewer,
        "login.html",
        status,
        next=target,
        error=error,
        oidc=oidc.enabled,
        token_sign_in=oidc.token_sign_in or not oidc.enabled,
        oidc_start="/login/oidc?" + urlencode({"next": target}),
    )
    write_session(request, response, viewer)  # the anonymous session carries the sign-in form's CSRF token
    return response


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> Response:
    viewer = await read_session(request)
    if viewer.person is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    oidc = get_state(request).settings.oidc
    if oidc.enabled and not oidc.token_sign_in:  # the provider is the only way in: go there at once
        return RedirectResponse("/login/oidc?" + urlencode({"next": safe_next(next)}), status_code=303)
    return render_login(request, viewer, safe_next(next), None)


@router.post("/login")
async def login(request: Request) -> Response:
    state = get_state(request)
    viewer = await read_session(request)
    form = await request.form()
    target = safe_next(str(form.get("next") or "/"))
    if state.settings.oidc.enabled and not state.settings.oidc.token_sign_in:
        return render_login(
            request, viewer, target, "Token sign-in is off here: sign in with the identity provider.", 403
        )
    if not csrf_ok(viewer, str(form.get("csrf") or "")):
        return render_login(request, viewer, target, "The form expired: try again.", 403)
    token = str(form.get("token") or "").strip()
    keys = sign_in_keys(request, token)
    wait = await sign_in_wait(state, keys)
    if wait is not None:  # even a right token: the throttle would mean nothing otherwise
        logger.warning("dashboard sign-in throttled from %s", request.client.host if request.client else "?")
        response = render_login(request, viewer, target, f"Too many failed sign-ins: try again in {wait} s.", 429)
        response.headers["retry-after"] = str(wait)
        return response
    digest = token_sha256(token) if token else ""
    person = state.policy.current.person_for_token_sha256(digest) if token else None
    if person is None:
        logger.warning("dashboard sign-in refused from %s", request.client.host if request.client else "?")
        await record_sign_in_failure(state, keys)
        return render_login(request, viewer, target, "That token belongs to no person in the policy.", 401)
    signed_in = new_session(person, digest)
    response = RedirectResponse(target, status_code=303)
    write_session(request, response, signed_in)
    logger.info("dashboard: %s signed in", person)
    return response


@router.post("/logout")
async def logout(request: Request, viewer: CsrfViewerDep) -> RedirectResponse:
    """Sign out: this session's cookie stops working everywhere, copies of it included; a person who signed in
    through the identity provider is then sent there to end that session too (RP-initiated logout)."""
    await sign_out(get_state(request), viewer)
    target = "/login"
    if viewer.via == "oidc":
        from service.dashboard.oidc_sign_in import provider_sign_out_url  # it imports this module (render_login)

        target = await provider_sign_out_url(request) or target
    response = RedirectResponse(target, status_code=303)
    write_session(request, response, Viewer(None, secrets.token_urlsafe(24)))
    return response


# -- the pending queue ----------------------------------------------------------------------------


@dataclass
class PendingItem:
    view: DecisionView
    risk: str
    risk_class: str
    rule_reason: str | None


def _risk(request: Request, server: str, tool: str) -> tuple[str, str]:
    """(label, css class) from the catalogs, else from the tool's annotations when known."""
    state = get_state(request)
    proxy = state.proxies.get(server)
    info_name = proxy.info.server_info.name if proxy is not None and proxy.info is not None else None
    found = state.catalogs.risk(server, tool, server_info_name=info_name)
    if found is not None:
        return f"{found.risk}, {found.level} ({found.note})", f"risk-{found.level}"
    hints = state.dashboard.annotations.get((server, tool))
    if hints is not None:
        if hints.read_only_hint:
            return "read (tool annotation)", "risk-low"
        if hints.destructive_hint:
            return "destructive (tool annotation)", "risk-high"
        return "write (tool annotation)", "risk-medium"
    return "unknown (not in a catalog)", "risk-unknown"


async def _pending(request: Request, service: ApprovalService) -> list[PendingItem]:
    rows, _ = await service.list(DecisionQuery(status="pending", limit=200))
    async with get_state(request).sessions() as session:
        votes = await queries.votes_of(session, [row.id for row in rows])
    items = []
    for row in rows:
        label, css = _risk(request, row.server, row.tool)
        items.append(PendingItem(DecisionView.of(row, votes.get(row.id, [])), label, css, row.reason))
    return items


@router.get("/")
async def queue(request: Request, viewer: ViewerDep, approvals: ApprovalsDep, msg: str | None = None) -> HTMLResponse:
    items = await _pending(request, approvals)
    return _render(request, viewer, "queue.html", items=items, message=msg, live=True)


@router.get("/partials/pending")
async def pending_fragment(request: Request, viewer: ViewerDep, approvals: ApprovalsDep) -> HTMLResponse:
    return _render(request, viewer, "_pending.html", items=await _pending(request, approvals))


@router.post("/decisions/{decision_id}/{value}")
async def vote(request: Request, decision_id: str, value: str, viewer: CsrfViewerDep, approvals: ApprovalsDep):
    choice: Literal["approve", "deny"]
    if value == "approve":
        choice = "approve"
    elif value == "deny":
        choice = "deny"
    else:
        raise HTTPException(status_code=404)
    form = await request.form()
    reason = str(form.get("reason") or "") or None
    wants_json = "application/json" in request.headers.get("accept", "")
    edited = form.get("arguments") if choice == "approve" else None  # the text area of an editable decision
    voter = Voter("person", viewer.person or "", groups=viewer.groups)
    try:
        standing = standing_choice(str(form.get("standing") or "")) if choice == "approve" else None
        if isinstance(edited, str) and standing is None:  # a rule is never both editable and standing (policy load)
            outcome = await approvals.approve_edited(
                decision_id,
                voter,
                _edited_arguments(edited),
                policy=get_state(request).policy.current,
                via="dashboard",
                reason=reason,
            )
        else:
            outcome = await approvals.vote(
                decision_id, voter, choice, via="dashboard", reason=reason, standing=standing
            )
    except ApprovalError as exc:
        if wants_json:
            return JSONResponse({"ok": False, "message": exc.message}, status_code=exc.status_code)
        return RedirectResponse("/?" + urlencode({"msg": exc.message}), status_code=303)
    if wants_json:
        return JSONResponse({"ok": True, "message": outcome.message, "status": outcome.decision.status})
    back = safe_next(str(form.get("next") or "/"))
    separator = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{separator}{urlencode({'msg': outcome.message})}", status_code=303)


def _edited_arguments(text: str) -> Any:
    """The decision page's text area as JSON; text that is not JSON is refused like any unusable edit."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EditRefused(f"the arguments are not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise EditRefused("the arguments are nested too deeply to read") from None


@router.get("/events")
async def events(request: Request, viewer: ViewerDep, dashboard: DashboardDep) -> StreamingResponse:
    sessions = get_state(request).sessions

    async def fingerprint() -> Any:
        async with sessions() as session:
            return await queries.decisions_fingerprint(session)

    stream = dashboard.live.stream(
        fingerprint=fingerprint,
        disconnected=request.is_disconnected,
        poll_interval=dashboard.poll_interval,
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


# -- history --------------------------------------------------------------------------------------


def _when(value: str | None) -> datetime | None:
    """A filter time from the form (`2026-11-24T12:00`, read as UTC) or None."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(status_code=422, detail=f"not a time: {value!r} (use 2026-11-24T12:00)") from None
    try:
        return as_utc(parsed)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


@dataclass(frozen=True)
class HistoryFilter:
    tab: str = "decisions"
    status: str = ""
    grant: str = ""
    server: str = ""
    tool: str = ""
    approver: str = ""
    since: str = ""
    until: str = ""
    offset: int = 0
    shadow: str = ""
    """"1": only calls where the shadow policy disagreed with the enforced one (the calls tab)."""

    @classmethod
    def of(cls, request: Request) -> HistoryFilter:
        q = request.query_params
        tab = q.get("tab", "decisions")
        try:
            offset = int(q.get("offset", "0") or 0)
        except ValueError:
            offset = -1
        if not 0 <= offset <= MAX_OFFSET:
            raise HTTPException(status_code=422, detail=f"offset must be a whole number from 0 to {MAX_OFFSET:,}")
        return cls(
            tab=tab if tab in ("decisions", "calls") else "decisions",
            **{name: (q.get(name) or "").strip() for name in ("status", "grant", "server", "tool", "approver")},
            since=q.get("since", ""),
            until=q.get("until", ""),
            offset=offset,
            shadow="1" if q.get("shadow") == "1" else "",
        )

    def query(self, **changes: Any) -> str:
        data = {k: v for k, v in {**self.__dict__, **changes}.items() if v not in ("", 0, None)}
        return urlencode(data)

    def decisions(self) -> DecisionQuery:
        since, until = _when(self.since), _when(self.until)
        return DecisionQuery(
            status=self.status or None,
            grant=self.grant or None,
            server=self.server or None,
            tool=self.tool or None,
            approver=self.approver or None,
            since=since.timestamp() if since else None,
            until=until.timestamp() if until else None,
        )

    def calls(self) -> audit_service.AuditFilter:
        return audit_service.AuditFilter(
            grant=self.grant or None,
            server=self.server or None,
            tool=self.tool or None,
            verdict=self.status or None,
            since=_when(self.since),
            until=_when(self.until),
            shadow_disagrees=self.shadow == "1",
        )


@router.get("/history")
async def history(request: Request, viewer: ViewerDep) -> HTMLResponse:
    flt = HistoryFilter.of(request)
    state = get_state(request)
    now = datetime.fromtimestamp(state.core.clock(), UTC)
    until = _when(flt.until) or now
    since = _when(flt.since) or until - timedelta(hours=24)
    events: list[AuditEvent] = []  # the calls tab
    decisions: list[Decision] = []  # the decisions tab
    total: int | None = None
    votes: dict[str, list[Vote]] = {}
    async with state.sessions() as session:
        if flt.tab == "calls":
            events = await audit_service.list_events(session, flt=flt.calls(), limit=PAGE, offset=flt.offset)
        else:
            decisions, total = await queries.list_decisions(session, flt.decisions(), limit=PAGE, offset=flt.offset)
            votes = await queries.votes_of(session, [decision.id for decision in decisions])
        series = await queries.call_series(
            session, since=since, until=until, server=flt.server or None, grant=flt.grant or None
        )
        durations = await queries.decision_times(session, flt.decisions())
    views = [DecisionView.of(decision, votes.get(decision.id, [])) for decision in decisions]
    decided_in = {
        decision.id: decision.decided_at - decision.created_at
        for decision in decisions
        if decision.decided_at is not None
    }
    return _render(
        request,
        viewer,
        "history.html",
        flt=flt,
        rows=events,
        views=views,
        decided_in=decided_in,
        total=total,
        page=PAGE,
        statuses=STATUSES if flt.tab == "decisions" else VERDICTS,
        calls_plot=plots.calls_over_time(series, since=since, until=until),
        plot_range=(since, until),
        decisions_plot=plots.decision_histogram(durations),
        decided_count=len(durations),
        servers=sorted(state.servers),
    )


DECISION_CSV = (
    "id", "status", "grant", "server", "tool", "arguments", "rule", "approvers", "votes", "created_at",
    "expires_at", "decided_at", "decided_by", "decided_via", "reason", "time_to_decide_s", "outcome",
)  # fmt: skip


def _decision_record(row: Any, votes: list) -> dict[str, Any]:
    view = DecisionView.of(row, votes)
    data = view.model_dump()
    data["time_to_decide_s"] = round(row.decided_at - row.created_at, 3) if row.decided_at is not None else None
    return data


def _decision_csv_row(data: dict[str, Any]) -> str:
    flat = dict(data)
    flat["arguments"] = json.dumps(data["arguments"], ensure_ascii=False, sort_keys=True)
    flat["approvers"] = " ".join(data["approvers"])
    flat["votes"] = "; ".join(f"{v['approver']} {v['value']} via {v['via']}" for v in data["votes"])
    flat["outcome"] = data["execution"]["outcome"] if data["execution"] else None
    buffer = io.StringIO()
    csv.writer(buffer).writerow(["" if flat.get(k) is None else flat.get(k) for k in DECISION_CSV])
    return buffer.getvalue()


@router.get("/history/export")
async def export(request: Request, viewer: ViewerDep, format: str = "csv") -> StreamingResponse:
    """The current filter, whole (not just the page shown), as CSV or JSON Lines."""
    if format not in ("csv", "jsonl"):
        raise HTTPException(status_code=422, detail="format is csv or jsonl")
    flt = HistoryFilter.of(request)
    calls, decisions = flt.calls(), flt.decisions()  # a bad filter answers 422 here, before the stream starts
    sessions = get_state(request).sessions

    async def body() -> AsyncIterator[str]:
        async with sessions() as session:
            if flt.tab == "calls":
                if format == "csv":
                    yield audit_service.csv_header()
                async for event in audit_service.iter_events(session, flt=calls):
                    yield audit_service.to_csv(event) if format == "csv" else audit_service.to_jsonl(event)
                return
            if format == "csv":
                buffer = io.StringIO()
                csv.writer(buffer).writerow(DECISION_CSV)
                yield buffer.getvalue()
            batch: list = []
            async for row in queries.iter_decisions(session, decisions):
                batch.append(row)
                if len(batch) >= 200:
                    for line in await _export_lines(session, batch, format):
                        yield line
                    batch = []
            for line in await _export_lines(session, batch, format):
                yield line

    kind = "calls" if flt.tab == "calls" else "decisions"
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(
        body(),
        media_type=media,
        headers={"content-disposition": f'attachment; filename="holdgate-{kind}.{format}"'},
    )


async def _export_lines(session, rows: list, format: str) -> list[str]:
    votes = await queries.votes_of(session, [row.id for row in rows])
    records = [_decision_record(row, votes.get(row.id, [])) for row in rows]
    if format == "csv":
        return [_decision_csv_row(r) for r in records]
    return [json.dumps(r, ensure_ascii=False) + "\n" for r in records]


# -- one decision ---------------------------------------------------------------------------------


@router.get("/decisions/{decision_id}")
async def decision_page(request: Request, decision_id: str, viewer: ViewerDep, approvals: ApprovalsDep) -> HTMLResponse:
    try:
        decision, votes = await approvals.get(decision_id)
    except ApprovalError as exc:
        if exc.status_code == 404:
            return _render(request, viewer, "not_found.html", 404, what=f"decision {decision_id}")
        raise
    async with get_state(request).sessions() as session:
        notifications = await queries.notifications_of(session, decision_id)
        calls = await queries.audit_of(session, decision_id)
    view = DecisionView.of(decision, votes)
    label, css = _risk(request, decision.server, decision.tool)
    return _render(
        request,
        viewer,
        "decision.html",
        d=view,
        row=decision,
        votes=votes,
        notifications=notifications,
        calls=calls,
        risk=label,
        risk_class=css,
        time_to_decide=(decision.decided_at - decision.created_at) if decision.decided_at is not None else None,
        live=decision.status == "pending",
    )


# -- rules ----------------------------------------------------------------------------------------


@dataclass
class ToolRow:
    name: str
    description: str
    hints: str
    risk: str
    risk_class: str
    action: str
    rule: str
    detail: str
    counts: queries.ToolCounts
    definition: str = "not recorded"
    """accepted | changed | new (the pinned definition, `service.tooldefs`), or not recorded yet."""


async def _tools_of(request: Request, server: str) -> tuple[list[Any], str | None]:
    """The upstream's tools, live from tools/list, or the reason they cannot be listed."""
    from service.gateway.upstream import call_upstream

    proxy = get_state(request).proxies.get(server)
    if proxy is None:
        return [], "not started"
    try:
        upstream = await asyncio.wait_for(proxy.shared_upstream(), 15)
        result = await asyncio.wait_for(call_upstream(upstream, lambda s: s.list_tools()), 15)
    except TimeoutError:
        return [], "no answer to tools/list within 15 s"
    except Exception as exc:
        return [], str(getattr(getattr(exc, "error", None), "message", None) or exc)
    await proxy.observe_tools(result.tools, complete=not result.next_cursor)  # a change seen here is held too
    return list(result.tools), None


def _hints_text(tool: Any) -> str:
    hints = tool.annotations
    if hints is None:
        return "none"
    parts = [
        name
        for name, on in (
            ("readOnly", hints.read_only_hint),
            ("destructive", hints.destructive_hint),
            ("idempotent", hints.idempotent_hint),
            ("openWorld", hints.open_world_hint),
        )
        if on
    ]
    return ", ".join(parts) or "none set"


MAX_EXPLAIN_DEPTH = 100
"""How deeply the explain form's arguments may nest: redaction and hashing walk them recursively."""


def _explain_arguments(text: str) -> dict[str, Any] | None:
    """The explain form's arguments (a JSON object, or None when empty); ValueError saying what is wrong."""
    if not text.strip():
        return None
    too_deep = ValueError(f"arguments nested deeper than {MAX_EXPLAIN_DEPTH} levels")
    try:
        arguments = json.loads(text)
    except RecursionError:
        raise too_deep from None
    if not isinstance(arguments, dict):
        raise ValueError("arguments must be a JSON object")
    level: list[Any] = [arguments]
    for _ in range(MAX_EXPLAIN_DEPTH):
        level = [child for value in level if isinstance(value, dict | list) for child in _children(value)]
        if not level:
            return arguments
    raise too_deep


def _children(value: dict[str, Any] | list[Any]) -> list[Any]:
    return list(value.values()) if isinstance(value, dict) else value


MAX_CANDIDATE_BYTES = 4 * 1024 * 1024
"""The largest candidate policy the Rules page takes (pasted or uploaded)."""
_replay_running = asyncio.Lock()


@router.post("/rules/replay")
async def replay_candidate(request: Request, viewer: CsrfViewerDep) -> HTMLResponse:
    """Replay a pasted or uploaded candidate policy on the audited calls; the Rules page with the changes table."""
    form = await request.form()
    upload = form.get("file")
    text = str(form.get("candidate") or "")
    if upload is not None and not isinstance(upload, str):
        data = await upload.read(MAX_CANDIDATE_BYTES + 1)
        if data:
            text = data.decode("utf-8", errors="replace")
    fields = {name: str(form.get(name) or "").strip() for name in ("since", "until", "grant", "server")}
    fields["since"] = fields["since"] or "7d"
    replayed: dict[str, Any] | None = None
    problem: str | None = None
    if not text.strip():
        problem = "paste a candidate policy or choose a file"
    elif len(text.encode("utf-8")) > MAX_CANDIDATE_BYTES:
        problem = f"the candidate is larger than {MAX_CANDIDATE_BYTES // (1024 * 1024)} MB"
    elif _replay_running.locked():
        problem = "another replay is running on this replica; try again when it has finished"
    else:
        async with _replay_running:
            try:
                replayed = await asyncio.to_thread(_replay_in_thread, get_state(request).settings, text, fields)
            except ValueError as exc:  # a time that does not parse, a candidate that does not load
                problem = str(exc)
    return await _rules_page(
        request, viewer, replay_form=fields | {"candidate": text}, replayed=replayed, problem=problem
    )


def _replay_in_thread(settings: Any, text: str, fields: dict[str, str]) -> dict[str, Any]:
    """The replay, on a thread with an event loop and database engine of its own: a long history is CPU work that
    must not stall the gateway's event loop. ValueError says what is wrong with the input."""
    import tempfile

    from service import db
    from service.audit import replay as replay_audit
    from service.configfile import ConfigError

    now = datetime.now(UTC)
    flt = replay_audit.ReplayFilter(
        since=replay_audit.time_point(fields["since"], now=now),
        until=replay_audit.time_point(fields["until"], now=now) if fields["until"] else None,
        grant=fields["grant"] or None,
        server=fields["server"] or None,
    )
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "candidate.json"
        path.write_text(text, encoding="utf-8")
        try:
            candidate = replay_audit.load_candidate(path)
        except ConfigError as exc:
            raise ValueError(str(exc).replace(str(path), "candidate")) from None

    async def run() -> dict[str, Any]:
        engine = db.create_engine(settings.effective_database_url)
        try:
            async with db.session_factory(engine)() as session:
                report = await replay_audit.replay(session, candidate, flt)
        finally:
            await engine.dispose()
        document = report.to_dict()
        document["candidate"]["path"] = "candidate"
        return document

    return asyncio.run(run())


@router.get("/rules")
async def rules(request: Request, viewer: ViewerDep) -> HTMLResponse:
    return await _rules_page(request, viewer)


async def _rules_page(
    request: Request,
    viewer: Viewer,
    *,
    replay_form: dict[str, str] | None = None,
    replayed: dict[str, Any] | None = None,
    problem: str | None = None,
) -> HTMLResponse:
    """The rules per upstream tool, `explain`, and (after a POST to /rules/replay) a candidate's changes table."""
    state = get_state(request)
    policy = state.policy.current
    q = request.query_params
    names = sorted(state.servers)
    listed = await asyncio.gather(*(_tools_of(request, name) for name in names))
    async with state.sessions() as session:
        counts = await queries.counts_by_tool(session)
        definitions = {(row.server, row.tool): status_of(row) for row in await listing(session)}
    annotations = state.dashboard.annotations
    servers = []
    for name, (tools, error) in zip(names, listed, strict=True):
        rows = []
        for tool in sorted(tools, key=lambda t: t.name):
            if tool.annotations is not None:
                annotations[(name, tool.name)] = tool.annotations
            verdict = policy.evaluate("", name, tool.name)
            label, css = _risk(request, name, tool.name)
            detail = verdict.reason or ""
            if verdict.limits:
                detail = "; ".join(limit.describe() for limit in verdict.limits) + (f"; {detail}" if detail else "")
            if verdict.approval is not None:
                detail = verdict.approval.describe() + (f"; {detail}" if detail else "")
            rows.append(
                ToolRow(
                    name=tool.name,
                    description=(tool.description or "").strip().split("\n")[0][:200],
                    hints=_hints_text(tool),
                    risk=label,
                    risk_class=css,
                    action=verdict.action + (" (rate-limited)" if verdict.limits and verdict.action != "deny" else ""),
                    rule=verdict.rule,
                    detail=detail,
                    counts=counts.get((name, tool.name), queries.ToolCounts()),
                    definition=definitions.get((name, tool.name), "not recorded"),
                )
            )
        change_rule = policy.on_tool_change(name)
        servers.append({"name": name, "tools": rows, "error": error, "on_tool_change": change_rule})
    explained = None
    form = {k: q.get(k, "") for k in ("server", "tool", "grant", "args")}
    if form["server"] and form["tool"]:
        try:
            arguments = _explain_arguments(form["args"])
            explained = explain(policy, form["grant"] or None, form["server"], form["tool"], arguments)
        except ValueError as exc:  # JSONDecodeError included
            explained = f"cannot explain: {exc}"
    return _render(
        request,
        viewer,
        "rules.html",
        servers=servers,
        policy=policy,
        policy_error=state.policy.last_error,
        form=form,
        explained=explained,
        replay_form=replay_form or {"since": "7d", "until": "", "grant": "", "server": "", "candidate": ""},
        replayed=replayed,
        replay_problem=problem,
    )


# -- tool definitions -------------------------------------------------------------------------------


@router.get("/tools/{server}/{tool:path}")
async def tool_definition(
    request: Request, server: str, tool: str, viewer: ViewerDep, msg: str | None = None
) -> HTMLResponse:
    """One tool's pinned definition: its status, the diff from the accepted one, and the accept button."""
    state = get_state(request)
    async with state.sessions() as session:
        try:
            row = await get(session, server, tool)
        except ToolDefinitionError:
            return _render(request, viewer, "not_found.html", 404, what=f"recorded tool {tool!r} on server {server!r}")
    view = ToolDefinitionView.of(row, details=True)
    change_rule = state.policy.current.on_tool_change(server)
    return _render(request, viewer, "tool.html", t=view, on_tool_change=change_rule, message=msg)


@router.post("/tools/{server}/{tool:path}/accept")
async def accept_tool(request: Request, server: str, tool: str, viewer: CsrfViewerDep) -> RedirectResponse:
    """Accept the definition the person reviewed (the form carries its hash: a newer one is refused)."""
    state = get_state(request)
    form = await request.form()
    reviewed = str(form.get("sha256") or "")
    page = f"/tools/{quote(server, safe='')}/{quote(tool, safe='')}"
    try:
        row, _ = await accept_definition(
            state.sessions,
            server,
            tool,
            by=viewer.person or "",
            via="dashboard",
            now=state.tool_definitions.clock(),
            audit_key=await state.audit.args_digest.key(),
            expected_sha256=reviewed or None,
        )
    except ToolDefinitionError as exc:
        return RedirectResponse(f"{page}?{urlencode({'msg': exc.message})}", status_code=303)
    state.tool_definitions.accepted(row)
    message = f"accepted: calls to {tool} follow their rule again (sha256 {row.current_sha256[:12]})"
    return RedirectResponse(f"{page}?{urlencode({'msg': message})}", status_code=303)
