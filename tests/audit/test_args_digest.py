"""The arguments digest: keyed, one key per deployment (kept across restarts, shared by replicas),
and unambiguous for the values that have no strict-JSON spelling."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from service import db
from service.audit.keys import ArgsDigester
from service.policy.redaction import args_digest, bounded_text, canonical_json, redact_arguments

CALL = {"jobId": "job-1", "token": "abc"}


async def digest_with(url: str, secret: str | None = None, args: Any = CALL) -> str:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        digester = ArgsDigester(db.session_factory(engine), SecretStr(secret) if secret else None)
        return await digester.digest(args)
    finally:
        await engine.dispose()


def url_of(database: dict[str, Any], path: Path) -> str:
    return database.get("database_url", f"sqlite+aiosqlite:///{path}")


async def test_the_stored_key_is_made_once_and_kept_across_restarts(database, tmp_path):
    url = url_of(database, tmp_path / "one.db")
    first = await digest_with(url)
    assert first == await digest_with(url)  # a restart reads the same key
    assert first != hashlib.sha256(canonical_json(CALL).encode()).hexdigest()
    assert first != await digest_with(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")  # another deployment


async def test_replicas_starting_together_agree_on_one_key(database, tmp_path):
    url = url_of(database, tmp_path / "shared.db")
    engines = [db.create_engine(url) for _ in range(4)]
    try:
        await db.upgrade(engines[0])
        digesters = [ArgsDigester(db.session_factory(engine)) for engine in engines]
        digests = await asyncio.gather(*(d.digest(CALL) for d in digesters))
    finally:
        for engine in engines:
            await engine.dispose()
    assert len(set(digests)) == 1


async def test_holdgate_secret_key_keys_the_digest_when_set(tmp_path):
    secret = "a-long-enough-secret-key-for-tests"
    one = await digest_with(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", secret)
    two = await digest_with(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", secret)
    stored = await digest_with(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    assert one == two != stored
    other = await digest_with(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", secret + "-rotated")
    assert other != one


def test_values_without_a_strict_json_spelling_digest_apart_from_their_stored_markers():
    key = b"k" * 32
    calls = [
        {"a": float("inf")},
        {"a": "[number: Infinity]"},
        {"a": "Infinity"},
        {"a": float("-inf")},
        {"a": float("nan")},
        {"a": "\ud800"},
        {"a": "\\ud800"},
        {"a": "a\x00b"},
        {"a": "a\\u0000b"},
    ]
    assert len({args_digest(key, call) for call in calls}) == len(calls)
    assert args_digest(key, {"a": float("inf")}) == args_digest(key, {"a": float("1e400")})
    assert redact_arguments({"a": float("inf")}) == redact_arguments({"a": "[number: Infinity]"})  # display only


def test_names_cut_to_their_column_stay_distinct_and_fit():
    names = ["t" * 256, "t" * 255, "t" * 250 + "\x00", "t" * 201]
    stored = [bounded_text(name, 200) for name in names]
    assert all(len(s) == 200 for s in stored) and len(set(stored)) == len(names)
    assert bounded_text("t" * 200, 200) == "t" * 200
    assert bounded_text("verdict\x00" + "x" * 40, 32) == ("verdict\\u0000" + "x" * 40)[:32]


def test_arguments_nested_deeper_than_python_recurses_are_stored_as_a_marker():
    deep: Any = "bottom"
    for _ in range(5000):
        deep = {"next": deep}
    assert redact_arguments({"deep": deep}) == {"[arguments nested too deeply to record]": True}
