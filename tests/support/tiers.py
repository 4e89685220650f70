"""The two test tiers: `integration` tests start something (a holdgate, a peer process, a browser, a
database server); every other test is a unit test, and `make test-fast` runs only those (under 30 s).

Tests are not marked by hand: a test is `integration` when it uses one of `INTEGRATION_FIXTURES`, or
when its code, its fixtures' code or the code of the test helpers they call (followed through the
helpers' own calls) names one of `INTEGRATION_NAMES`. A new test written with `run_gateway` lands in
the right tier by itself. `@pytest.mark.integration` on a test forces it (for a helper this cannot see,
e.g. one reached through a method); `@pytest.mark.unit` keeps a test in the fast tier.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

import pytest

INTEGRATION_FIXTURES = frozenset({"node_available", "postgres_url", "database"})
"""Peers (node), a PostgreSQL server: see tests/conftest.py."""

INTEGRATION_NAMES = (
    "run_gateway",  # a holdgate on a real port (tests/support/harness.py)
    "uvicorn",
    "subprocess",
    "Popen",
    "create_subprocess",
    "stdio_client",
    "playwright",
    "asyncpg",
    "CliRunner",  # the CLI's commands run migrations and open the database, some serve
)

_CALLED = re.compile(r"\b([A-Za-z_]\w*)\s*\(")


def mark_integration_tests(items: Iterable[pytest.Item]) -> None:
    for item in items:
        marked = item.get_closest_marker("unit") or item.get_closest_marker("integration")
        if marked is None and _starts_something(item):
            item.add_marker(pytest.mark.integration)


def _starts_something(item: pytest.Item) -> bool:
    fixtures = set(getattr(item, "fixturenames", ()))
    if fixtures & INTEGRATION_FIXTURES:
        return True
    code: list[Callable[..., Any]] = []
    if isinstance(item, pytest.Function):
        code.append(item.function)
        for name in fixtures:
            for definition in item._fixtureinfo.name2fixturedefs.get(name, ()):
                if _is_ours(definition.func):
                    code.append(definition.func)
    seen: set[object] = set()
    return any(_reaches(function, seen) for function in code)


def _is_ours(thing: object) -> bool:
    return str(getattr(thing, "__module__", "")).startswith("tests")


def _reaches(thing: object, seen: set[object]) -> bool:
    """Whether `thing`'s source, or that of a test helper it calls (transitively), names an integration name."""
    thing = inspect.unwrap(thing) if callable(thing) else thing  # type: ignore[arg-type]
    if thing in seen:
        return False
    seen.add(thing)
    try:
        source = inspect.getsource(thing)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False
    if any(name in source for name in INTEGRATION_NAMES):
        return True
    if inspect.isclass(thing):
        namespace = vars(inspect.getmodule(thing) or object())
    else:
        namespace = getattr(thing, "__globals__", {})
    for name in set(_CALLED.findall(source)):
        helper = namespace.get(name)
        if (inspect.isfunction(helper) or inspect.isclass(helper)) and _is_ours(helper) and _reaches(helper, seen):
            return True
    return False
