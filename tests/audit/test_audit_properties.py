"""Whatever a client can send, the audit records it in full: generated names, arguments (non-finite
numbers, NUL, lone surrogates, any Unicode, nesting) and upstream text, on both databases."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import db
from service.audit.service import UNRECORDABLE, AuditWriter
from service.policy.redaction import args_digest
from tests.audit.test_unrecordable import events, record, unrecordable_count, verified

ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)  # surrogates and NUL included
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=25,
)
CALLS = st.lists(
    st.tuples(
        st.text(alphabet=st.characters(exclude_categories=()), min_size=1, max_size=300),
        st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=5),
        st.none() | ANY_TEXT,
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=CALLS)
async def test_whatever_arrives_is_recorded_in_full_and_the_chain_verifies(engine, calls):
    before_rows, before_replaced = len(await events(engine)), unrecordable_count()
    writer = AuditWriter(db.session_factory(engine), batch_size=50)
    for i, (tool, arguments, detail) in enumerate(calls):
        writer.record(record(i, tool=tool, arguments=arguments, detail=detail))
    await writer.flush()

    key = await writer.args_digest.key()
    rows = (await events(engine))[before_rows:]
    assert len(rows) == len(calls) and not writer._queue
    assert unrecordable_count() == before_replaced
    for row, (tool, arguments, _detail) in zip(rows, calls, strict=True):
        assert row.detail is None or not row.detail.startswith(UNRECORDABLE)
        assert row.args_sha256 == args_digest(key, arguments)
        assert isinstance(json.loads(row.arguments), dict)
        assert len(row.tool) <= 200
        if (
            tool.isprintable()
            and len(tool) <= 200
            and tool.encode("utf-8", "surrogatepass").decode("utf-8", "ignore") == tool
        ):
            assert row.tool == tool
    assert (await verified(engine)).ok
