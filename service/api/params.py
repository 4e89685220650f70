"""Input checks the REST API and the dashboard share, bounded to what the databases and the clock can hold.

An offset past a 64-bit integer, or a time that has no unix-seconds value in UTC (year 1 in a
timezone east of UTC, year 9999 west of it), used to reach SQLite or `datetime.timestamp()` and
come back as a 500. These types refuse such values at the edge with a 422 that says why; the
dashboard's form filters go through the same checks.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

from fastapi import HTTPException, Query, Request
from pydantic import AfterValidator

MAX_OFFSET = 1_000_000_000
"""Far past any listing a person pages through, far below what SQL integers hold."""
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
"""A day short of the end of `datetime`, so a day's arithmetic on either side (plots) stays in range."""
TIME_RANGE_TEXT = "times must fall between 1970-01-01 and 9999-12-30 (UTC; a time without an offset is read as UTC)"


def as_utc(value: datetime) -> datetime:
    """`value` as an aware UTC time (naive is read as UTC); ValueError, naming the range, when out of it."""
    try:
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        aware = None
    if aware is None or not EARLIEST <= aware <= LATEST:
        raise ValueError(f"{value.isoformat()} is out of range: {TIME_RANGE_TEXT}")
    return aware


UtcDateTime = Annotated[datetime, AfterValidator(as_utc)]
"""A time filter: ISO 8601, with or without an offset, within `EARLIEST`..`LATEST`."""

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip (at most 1,000,000,000)")]


NUL_REFUSED = "text may not contain the NUL character (\\u0000)"


async def refuse_nul(request: Request) -> None:
    """A router dependency: 422 for a NUL character anywhere in the path, the query, a JSON or a form body.

    PostgreSQL cannot store or even compare text holding NUL (the driver raises, which was a 500),
    and no filter, id or reason a person types holds one; SQLite would take it, and is refused alike.
    """
    query = request.query_params.multi_items()
    if "\x00" in request.url.path or any("\x00" in key + value for key, value in query):
        raise HTTPException(status_code=422, detail=NUL_REFUSED)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except ValueError:
            return  # malformed JSON: FastAPI's own validation answers it
        except RecursionError:
            raise HTTPException(status_code=422, detail="the JSON body is nested too deeply") from None
        if _holds_nul(body):
            raise HTTPException(status_code=422, detail=NUL_REFUSED)
    elif content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()  # parsed once: the route reads the same, cached
        if any(isinstance(value, str) and "\x00" in key + value for key, value in form.multi_items()):
            raise HTTPException(status_code=422, detail=NUL_REFUSED)


def _holds_nul(value: object) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False
