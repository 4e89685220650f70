"""The upgrade from fixed-window counters to sliding windows keeps counting the calls of open windows."""

from __future__ import annotations

import math
import time

from sqlalchemy import text

from service import db
from service.policy import Limit, consume

FIXED_WINDOW_REVISION = "fa44a1489a07"


async def test_calls_counted_in_an_open_window_still_count_after_the_upgrade(tmp_path, database):
    url = database.get("database_url") or f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine, FIXED_WINDOW_REVISION)
        now = time.time()
        start = math.floor(now / 3600) * 3600
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO rate_counters (counter, scope_key, window_start, window_seconds, count) VALUES "
                    "('hourly', 'agent', :start, 3600, 3), ('hourly', 'agent', :before, 3600, 3), "
                    "('hourly', 'other', :before, 3600, 3)"
                ),
                {"start": start, "before": start - 3600},
            )
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        hourly = Limit("hourly", 3600, 3)
        # the open window's 3 calls are still counted: no new hour of calls at the upgrade
        assert not (await consume(sessions, [hourly], grant="agent", now=time.time())).allowed
        # a window that had ended counts nothing
        assert (await consume(sessions, [hourly], grant="other", now=time.time())).allowed
        # a policy that allows more uses the carried calls as part of its count
        wider = Limit("hourly", 3600, 5)
        outcomes = [await consume(sessions, [wider], grant="agent", now=time.time()) for _ in range(3)]
        assert [o.allowed for o in outcomes] == [True, True, False]
        # and an hour after the upgrade they have left the window
        assert (await consume(sessions, [wider], grant="agent", now=time.time() + 3601)).allowed
    finally:
        await engine.dispose()
