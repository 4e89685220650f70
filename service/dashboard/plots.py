"""Small inline SVG plots, drawn on the server: calls and verdicts over time, time-to-decision histogram.

Pure functions from numbers to markup (escaped), so the dashboard needs no charting library and
no build step; each plot carries a <title> per bar for exact values on hover.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from html import escape

from markupsafe import Markup

VERDICT_COLOURS = {
    "allowed": "#2e7d32",
    "approved": "#66bb6a",
    "denied": "#c62828",
    "rate_limited": "#ef6c00",
    "pending": "#1565c0",
    "expired": "#8e24aa",
    "cancelled": "#757575",
}
OTHER_COLOUR = "#9e9e9e"
WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 720, 220, 44, 36, 12

DECISION_BUCKETS: tuple[tuple[float, str], ...] = (
    (10, "<10s"),
    (30, "10–30s"),
    (60, "30s–1m"),
    (120, "1–2m"),
    (300, "2–5m"),
    (900, "5–15m"),
    (3600, "15m–1h"),
    (float("inf"), ">1h"),
)


def _frame(body: list[str], label: str, max_value: int) -> Markup:
    axis = [
        f'<line x1="{PAD_LEFT}" y1="{HEIGHT - PAD_BOTTOM}" x2="{WIDTH}" y2="{HEIGHT - PAD_BOTTOM}" class="axis"/>',
        f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + 8}" text-anchor="end" class="tick">{max_value}</text>',
        f'<text x="{PAD_LEFT - 6}" y="{HEIGHT - PAD_BOTTOM}" text-anchor="end" class="tick">0</text>',
    ]
    svg = (
        f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(axis + body)}</svg>'
    )
    return Markup(svg)


def calls_over_time(
    events: Sequence[tuple[datetime, str]], *, since: datetime, until: datetime, buckets: int = 24
) -> Markup:
    """Stacked bars of calls per time bucket, coloured by verdict, with a legend."""
    span = max((until - since).total_seconds(), 1.0)
    step = span / buckets
    counts: list[dict[str, int]] = [{} for _ in range(buckets)]
    for ts, verdict in events:
        when = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        index = int((when - since).total_seconds() // step)
        if 0 <= index < buckets:
            counts[index][verdict] = counts[index].get(verdict, 0) + 1
    peak = max((sum(c.values()) for c in counts), default=0) or 1
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    bar_w = (WIDTH - PAD_LEFT) / buckets
    body: list[str] = []
    for i, bucket in enumerate(counts):
        x = PAD_LEFT + i * bar_w
        y = float(HEIGHT - PAD_BOTTOM)
        start = since + timedelta(seconds=i * step)
        for verdict, n in sorted(bucket.items()):
            h = n / peak * plot_h
            y -= h
            colour = VERDICT_COLOURS.get(verdict, OTHER_COLOUR)
            body.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{start:%m-%d %H:%M}Z: {n} {escape(verdict)}</title></rect>"
            )
        if i % max(1, buckets // 6) == 0:
            body.append(f'<text x="{x:.1f}" y="{HEIGHT - PAD_BOTTOM + 14}" class="tick">{start:%m-%d %H:%M}</text>')
    seen = sorted({v for bucket in counts for v in bucket})
    for i, verdict in enumerate(seen):
        lx = PAD_LEFT + i * 110
        colour = VERDICT_COLOURS.get(verdict, OTHER_COLOUR)
        body.append(
            f'<rect x="{lx}" y="{HEIGHT - 12}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="{HEIGHT - 3}" class="tick">{escape(verdict)}</text>'
        )
    return _frame(body, f"calls by verdict per {timedelta(seconds=round(step))}", peak)


def decision_histogram(seconds: Sequence[float]) -> Markup:
    """How long people took to decide: a bar per duration bucket."""
    counts = [0] * len(DECISION_BUCKETS)
    for value in seconds:
        for i, (upper, _label) in enumerate(DECISION_BUCKETS):
            if value < upper:
                counts[i] += 1
                break
    peak = max(counts) or 1
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    bar_w = (WIDTH - PAD_LEFT) / len(counts)
    body: list[str] = []
    for i, (n, (_upper, label)) in enumerate(zip(counts, DECISION_BUCKETS, strict=True)):
        x = PAD_LEFT + i * bar_w
        h = n / peak * plot_h
        body.append(
            f'<rect x="{x + 4:.1f}" y="{HEIGHT - PAD_BOTTOM - h:.1f}" width="{bar_w - 8:.1f}" height="{h:.1f}" '
            f'fill="#1565c0"><title>{escape(label)}: {n} decision(s)</title></rect>'
            f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - PAD_BOTTOM + 14}" text-anchor="middle" class="tick">'
            f"{escape(label)}</text>"
        )
        if n:
            body.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - PAD_BOTTOM - h - 3:.1f}" text-anchor="middle" '
                f'class="tick">{n}</text>'
            )
    return _frame(body, "time to decision", peak)
