"""The command line's plain-text table (`service.commands.table`): aligned, fitted to a terminal, inert."""

from __future__ import annotations

from service.commands.table import Column, render, width_of

COLUMNS = [Column("id"), Column("call", shrink=0, floor=10), Column("who", shrink=1, floor=4)]


def test_columns_line_up_with_wide_characters():
    text = render(COLUMNS, [["d_1", "日本語", "alice"], ["d_22", "abc", "bob"]], title="2 decision(s)")
    title, header, rule, first, second = text.splitlines()
    assert title == "2 decision(s)"
    assert header.split() == ["id", "call", "who"]
    who_at = width_of(header[: header.index("who")])
    assert width_of(first[: first.index("alice")]) == who_at == width_of(second[: second.index("bob")])
    assert rule.split() == ["----", "------", "-----"]


def test_control_characters_are_shown_escaped_never_written():
    text = render(COLUMNS, [["d_1", 'jobs/run {"x": 1}', "eve\x1b[2J\nroot\u202e"]])
    assert "\x1b" not in text and "\u202e" not in text
    assert len(text.splitlines()) == 3  # the newline in a cell did not make a line
    assert "eve\\x1b[2J\\nroot\\u202e" in text


def test_a_narrow_terminal_shortens_the_call_first_and_never_the_id():
    call = "jobs/cancel " + "x" * 60
    rows = [["d_abcdefghijklmnopqrst", call, "alice"]]
    whole = render(COLUMNS, rows)
    assert call in whole  # no width: nothing is cut (a pipe, grep)
    fitted = render(COLUMNS, rows, width=50).splitlines()
    assert all(width_of(line) <= 50 for line in fitted)
    assert "d_abcdefghijklmnopqrst" in fitted[-1] and "alice" in fitted[-1]
    assert "jobs/cancel" in fitted[-1] and "…" in fitted[-1]


def test_a_terminal_too_narrow_stops_at_each_columns_floor_and_leaves_the_line_long():
    rows = [["d_abcdefghijklmnopqrst", "jobs/cancel " + "x" * 60, "alice"]]
    line = render(COLUMNS, rows, width=20).splitlines()[-1]
    assert line == "d_abcdefghijklmnopqrst  jobs/canc…  ali…"  # floors 10 and 4; the id whole
