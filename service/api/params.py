"""Query parameters every listing shares, bounded to what the databases and the clock can hold.

An offset past a 64-bit integer, or a time that has no unix-seconds value in UTC (year 1 in a
timezone east of UTC, year 9999 west of it), used to reach SQLite or `datetime.timestamp()` and
come back as a 500. These types refuse such values at the edge with a 422 that says why; the
dashboard's form filters go through the same checks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query
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
