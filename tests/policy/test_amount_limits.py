"""Limits that add up an amount (`limits[].amount`): against real databases (SQLite and PostgreSQL with both
drivers, the fixtures of `test_limits`), and the fail-closed evaluation of the amount itself (`charges`).

A limit `{"max": 1000, "window": "day", "amount": "args.amount"}` lets calls through while the amounts of the
calls in any span of a day add up to at most 1000; all or nothing with the rule's other limits."""

from __future__ import annotations

import asyncio
import math

import pytest
from sqlalchemy import delete, func, select

from service.models import RateAmount
from service.policy import Limit, LimitOutcome, consume, prune
from service.policy.conditions import ConditionFailed, compile_amount
from service.policy.limits import charges
from tests.policy.test_limits import T0, database, migrated  # noqa: F401 - the per-backend fixtures

# ruff: noqa: F811 - the `database` fixture is imported above and named as a parameter below

SPEND = Limit("spend", 3600, 1000, "grant", compile_amount("args.amount"))
RATE = Limit("calls", 3600, 3, "grant")


async def amounts(database) -> dict[tuple[str, str], float]:
    async with database.sessions() as session:
        rows = await session.execute(
            select(RateAmount.counter, RateAmount.scope_key, func.sum(RateAmount.amount)).group_by(
                RateAmount.counter, RateAmount.scope_key
            )
        )
        return {(counter, key): float(total) for counter, key, total in rows}


@pytest.fixture
async def store(database):
    """The module's database (per backend) with no amounts left by an earlier test."""
    async with database.sessions() as session, session.begin():
        await session.execute(delete(RateAmount))
    return database


async def spend(database, amount: float, *, at: float, grant: str = "agent", limits=(SPEND,)) -> LimitOutcome:
    added = [amount if limit.amount is not None else 1.0 for limit in limits]
    return await consume(database.sessions, list(limits), grant=grant, now=at, amounts=added)


async def test_amounts_add_up_to_max_then_refuse_until_enough_leaves_the_window(store):
    assert (await spend(store, 400, at=T0)).allowed
    assert (await spend(store, 500, at=T0 + 10)).allowed
    refused = await spend(store, 200, at=T0 + 20)
    # 900 + 200 > 1000; once the 400 from T0 leaves the window (T0 + 3600) there is room
    assert refused == LimitOutcome(allowed=False, counter="spend", retry_after=3580.0)
    assert (await spend(store, 100, at=T0 + 30)).allowed, "exactly max is allowed"
    assert await amounts(store) == {("spend", "agent"): 1000.0}
    assert not (await spend(store, 0.5, at=T0 + 3599)).allowed
    assert (await spend(store, 400, at=T0 + 3600)).allowed, "the 400 of T0 left the window"
    assert await amounts(store) == {("spend", "agent"): 1000.0}, "rows outside the window are gone"


async def test_retry_after_waits_for_as_many_old_amounts_as_the_call_needs(store):
    for i, amount in enumerate((100, 100, 700)):
        assert (await spend(store, amount, at=T0 + i)).allowed
    refused = await spend(store, 250, at=T0 + 100)  # needs 150 freed: the first two calls (T0, T0 + 1)
    assert refused.retry_after == 3600 + 1 - 100


async def test_an_amount_above_max_is_refused_for_good_without_touching_the_store(store):
    assert await spend(store, 1000.5, at=T0) == LimitOutcome(allowed=False, counter="spend", retry_after=None)
    assert await amounts(store) == {}


async def test_a_zero_amount_counts_nothing_and_passes_a_full_limit(store):
    assert (await spend(store, 1000, at=T0)).allowed
    assert (await spend(store, 0, at=T0 + 1)).allowed
    async with store.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(RateAmount)) == 1


async def test_fractions_add_up_without_float_surprises(store):
    cents = Limit("cents", 60, 0.3, "global", compile_amount("args.amount"))
    for at in (T0, T0 + 1, T0 + 2):
        assert (await spend(store, 0.1, at=at, limits=(cents,))).allowed  # 0.1 + 0.1 + 0.1 > 0.3 in floats
    assert not (await spend(store, 0.1, at=T0 + 3, limits=(cents,))).allowed


async def test_amount_and_count_limits_are_all_or_nothing(store):
    both = (RATE, SPEND)
    assert (await spend(store, 900, at=T0, limits=both)).allowed
    # the amount is over: the call is not counted by the rate limit either
    assert not (await spend(store, 200, at=T0 + 1, limits=both)).allowed
    assert (await spend(store, 50, at=T0 + 2, limits=both)).allowed
    assert (await spend(store, 50, at=T0 + 3, limits=both)).allowed
    # the rate limit is full (3 calls): the amount is not added
    refused = await spend(store, 1, at=T0 + 4, limits=both)
    assert (refused.allowed, refused.counter) == (False, "calls")
    assert await amounts(store) == {("spend", "agent"): 1000.0}
    assert await store.counts() == {("calls", "agent"): 3}


async def test_grant_scope_sums_each_grant_apart_and_global_is_shared(store):
    shared = Limit("shared", 60, 100, "global", compile_amount("args.amount"))
    assert (await spend(store, 1000, at=T0, grant="a")).allowed
    assert (await spend(store, 1000, at=T0, grant="b")).allowed
    assert (await spend(store, 60, at=T0, grant="a", limits=(shared,))).allowed
    assert not (await spend(store, 60, at=T0, grant="b", limits=(shared,))).allowed


async def test_concurrent_calls_from_two_engines_never_exceed_max(store):
    """Two engines (two processes or replicas) at once: the sum in the window never passes max."""
    shared = Limit("budget", 60, 1000, "global", compile_amount("args.amount"))
    factories = [store.sessions, store.engine()]
    outcomes = await asyncio.gather(
        *(
            consume(factories[i % 2], [RATE, shared], grant=f"g{i % 7}", now=T0 + 5, amounts=[1.0, 70.0])
            for i in range(40)
        )
    )
    allowed = sum(o.allowed for o in outcomes)
    assert allowed == 14  # 14 x 70 = 980; a 15th would be 1050
    assert (await amounts(store))[("budget", "*")] == 980.0
    assert sum((await store.counts()).values()) == 14, "a refused call consumed no count either"


async def test_prune_drops_amounts_of_idle_keys(store):
    await spend(store, 10, at=T0)
    assert await prune(store.sessions, T0 + 3599) == 0
    assert await prune(store.sessions, T0 + 3600) == 1
    assert await amounts(store) == {}


# -- the amount of one call -------------------------------------------------------------------------------------


def charged(limits, arguments) -> tuple[float, ...] | ConditionFailed:
    return charges(limits, arguments, grant="agent", server="pay", tool="transfer", now=T0)


def test_charges_are_one_per_counting_limit_and_the_amount_per_summing_one() -> None:
    recipients = Limit("mails", 86400, 500, "grant", compile_amount("size(args.recipients)"))
    assert charged([RATE, SPEND, recipients], {"amount": 12.5, "recipients": ["a", "b", "c"]}) == (1.0, 12.5, 3.0)
    assert charged([RATE], {"anything": object()}) == (1.0,), "no amount: the arguments are not read"


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({}, 'Key not found in map : "amount"'),
        ({"amount": "12"}, "gave a string, not a number"),
        ({"amount": True}, "gave a bool, not a number"),
        ({"amount": None}, "gave a null, not a number"),
        ({"amount": -5}, "is negative (-5)"),
        ({"amount": -0.01}, "is negative"),
        ({"amount": math.nan}, "NaN or infinite"),
        ({"amount": math.inf}, "NaN or infinite"),
        ({"amount": 2**64}, "outside CEL's 64-bit range"),
        ({"amount": "x\x00"}, "NUL"),
    ],
)
def test_an_amount_that_is_not_a_number_of_zero_or_more_fails_closed(arguments, problem) -> None:
    failed = charged([RATE, SPEND], arguments)
    assert isinstance(failed, ConditionFailed), failed
    assert problem in failed.reason
    assert failed.reason.endswith("so the call is denied")


def test_an_amount_that_overflows_or_divides_by_zero_fails_closed() -> None:
    huge = Limit("h", 60, 10, "grant", compile_amount("args.amount * 1e308 * 10.0"))
    assert isinstance(charged([huge], {"amount": 10.0}), ConditionFailed)
    overflow = Limit("o", 60, 10, "grant", compile_amount("args.amount * 9223372036854775807"))
    failed = charged([overflow], {"amount": 2})
    assert isinstance(failed, ConditionFailed) and "overflow" in failed.reason.lower()
    ratio = Limit("r", 60, 10, "grant", compile_amount("1.0 / args.amount"))
    assert isinstance(charged([ratio], {"amount": 0.0}), ConditionFailed), "1/0 is infinite"


def test_explain_shows_what_a_call_adds_and_an_amount_that_fails_closed(tmp_path) -> None:
    import json as json_module

    from service.policy import explain, load_policy

    path = tmp_path / "policy.json"
    limits = [
        {"counter": "spend", "window": "day", "max": 5000, "amount": "args.amount"},
        {"counter": "payments", "window": "hour", "max": 20},
    ]
    path.write_text(json_module.dumps({"tools": {"pay": {"limits": limits}}}))
    policy = load_policy(path)
    shown = explain(policy, "agent", "bank", "pay", {"amount": 250})
    assert "  - spend: at most 5000 of `args.amount` in any 1d, per grant" in shown
    assert "amounts this call adds: spend +250, payments +1" in shown
    failing = explain(policy, "agent", "bank", "pay", {"amount": "lots"})
    assert "amounts: cannot be counted, so the call is denied (fails closed): limit 'spend'" in failing
