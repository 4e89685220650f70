"""A plain-text table for the command line, in the standard library alone.

`holdgate decisions list` is typed while agents wait, and rich's table (with its console, styles and colours)
was a sixth of its start-up once the database path had lost Alembic. This printer aligns columns, fits the
terminal by shortening the columns the caller marks as shrinkable (never an id the user copies into `holdgate
approve`), and writes nothing a terminal interprets: control characters in a cell are shown escaped, so a tool
argument or a name cannot move the cursor or forge a line. When the output is not a terminal (a pipe, a file)
lines are not cut: `grep` sees every cell whole.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

GAP = "  "
ELLIPSIS = "…"


@dataclass(frozen=True)
class Column:
    header: str
    shrink: int | None = None
    """Order in which columns are shortened to fit the terminal (lowest first); None: never shortened."""
    floor: int = 8
    """A shortened column keeps at least this many cells (or its header's width, if longer)."""


def visible(text: str) -> str:
    """`text` with control characters (newlines, escape sequences, NUL) written as escapes, on one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def width_of(text: str) -> int:
    """Terminal cells `text` takes: wide East Asian characters take two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def cut(text: str, cells: int) -> str:
    """`text` shortened to `cells` terminal cells, ending with an ellipsis when anything was cut."""
    if width_of(text) <= cells:
        return text
    kept, used = [], 0
    for c in text:
        w = width_of(c)
        if used + w > cells - 1:
            break
        kept.append(c)
        used += w
    return "".join(kept) + ELLIPSIS


def pad(text: str, cells: int) -> str:
    return text + " " * (cells - width_of(text))


def render(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    caption: str | None = None,
    width: int | None = None,
) -> str:
    """The table as text: an optional title line, the headers, a rule, the rows and an optional caption.

    `width` is the terminal's (None: no limit). Columns are shortened in their `shrink` order, each down to its
    `floor`, until the table fits; if it cannot, the lines are left long (the terminal wraps them) rather than
    cutting a column that must stay whole or making one unreadable.
    """
    cells = [[visible(str(value)) for value in row] for row in rows]
    widths = [max([width_of(c.header)] + [width_of(row[i]) for row in cells]) for i, c in enumerate(columns)]
    if width is not None:
        excess = sum(widths) + len(GAP) * (len(columns) - 1) - width
        shrinkable = sorted((c.shrink, i) for i, c in enumerate(columns) if c.shrink is not None)
        for _, i in shrinkable:
            if excess <= 0:
                break
            floor = max(columns[i].floor, width_of(columns[i].header))
            taken = min(excess, max(0, widths[i] - floor))
            widths[i] -= taken
            excess -= taken
    lines = [] if title is None else [title]
    lines.append(GAP.join(pad(c.header, w) for c, w in zip(columns, widths, strict=True)).rstrip())
    lines.append(GAP.join("-" * w for w in widths))
    for row in cells:
        lines.append(GAP.join(pad(cut(value, w), w) for value, w in zip(row, widths, strict=True)).rstrip())
    if caption is not None:
        lines.append(caption)
    return "\n".join(lines)
