"""`MemoryWindows`, the sliding windows kept in memory (a replay of the audit, a shadow policy's limits),
answers exactly as `consume` does on the database: the same calls, the same outcomes, retry_after included."""

from __future__ import annotations

import random
from pathlib import Path

from service import db
from service.policy import Limit, consume
from service.policy.limits import MemoryWindows

T0 = 1_800_057_600.0


async def test_memory_windows_answer_as_the_database_does(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'limits.db'}")
    await db.upgrade(engine)
    sessions = db.session_factory(engine)
    memory = MemoryWindows()
    rng = random.Random(17)
    limit_sets = [
        (Limit("a", 10, 3),),
        (Limit("a", 10, 3), Limit("b", 60, 5, scope="global")),
        (Limit("b", 60, 5, scope="global"),),
        (Limit("c", 1, 1),),
        (Limit("z", 5, 0),),
        (Limit("a", 10, 2),),  # the same counter with a smaller max (a reloaded policy): the newest calls stay
    ]
    now = T0
    try:
        for _ in range(400):
            now += rng.choice((0.0, 0.1, 0.5, 1.0, 2.5, 7.0))
            limits = rng.choice(limit_sets[:-1]) if rng.random() < 0.9 else limit_sets[-1]
            grant = rng.choice(("g1", "g2"))
            expected = await consume(sessions, limits, grant=grant, now=now)
            assert memory.consume(limits, grant=grant, now=now) == expected, (now - T0, limits, grant)
    finally:
        await engine.dispose()


def test_idle_keys_are_pruned_without_changing_answers() -> None:
    memory = MemoryWindows()
    limits = (Limit("a", 10, 1),)
    assert memory.consume(limits, grant="g", now=T0).allowed
    assert not memory.consume(limits, grant="g", now=T0 + 5).allowed
    assert memory.prune(T0 + 9) == 0 and len(memory) == 1
    assert memory.prune(T0 + 10) == 1 and len(memory) == 0
    assert memory.consume(limits, grant="g", now=T0 + 10).allowed
