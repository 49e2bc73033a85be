"""Server-rendered bar charts: a series of labelled numbers → one inline SVG (pure, no Django).

The pages' Content-Security-Policy allows no external script and no inline style, so a chart is
plain SVG markup: presentation by class names (`atelier.css`), geometry by attributes. Each bar
carries a `<title>` (the browser's tooltip and what a screen reader reads for it), the chart is
`role="img"` with a title and a description naming every value, and the pages put a table of the
same numbers under each chart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 640
HEIGHT = 220
_LEFT = 56  # room for the value axis' labels
_RIGHT = 8
_TOP = 12
_BOTTOM = 34  # room for the category labels
_TICKS = 4
_LABEL_CHARS = 10
_MAX_BAR_WIDTH = 48  # a few bars (tenants, workers) stay bars, not blocks


@dataclass(frozen=True)
class Bar:
    """One bar: its axis label, its value, and the tooltip's longer name (the label if empty)."""

    label: str
    value: float
    name: str = ""


def nice_scale(largest: float, ticks: int = _TICKS, *, whole: bool = False) -> tuple[float, int]:
    """(step, steps): the value axis in at most `ticks` steps of a round size (1, 2 or 5 × 10ⁿ;
    at least 1 if `whole`, for counts) whose top, step × steps, is at or above `largest`.
    Nothing above 0: one step of 1."""
    if not math.isfinite(largest) or largest <= 0:
        return 1.0, 1
    raw = max(largest / ticks, 1.0) if whole else largest / ticks
    exponent = math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        step = factor * 10.0 ** exponent
        if step * ticks >= largest * (1 - 1e-12):
            return step, max(1, math.ceil(largest / step - 1e-9))
    return 10.0 ** (exponent + 1), ticks  # pragma: no cover (10 × 10ⁿ always qualifies)


def plain_number(value: float) -> str:
    """`1,234.5`, `600` (no `.0`): the value axis' labels unless the caller says otherwise."""
    text = f"{value:,.1f}"
    return text[:-2] if text.endswith(".0") else text


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    chart_id: str,
    unit: str = "",
    value_format: Callable[[float], str] = plain_number,
    axis_format: Callable[[float], str] = plain_number,
    label_every: int = 1,
    empty_text: str = "no data",
    whole: bool = False,
) -> str:
    """The SVG markup of a bar chart of `bars` (every text escaped: safe to insert in a page).

    `chart_id` makes the title's and description's ids unique on the page; `unit` follows each
    value in the tooltips and the description; `label_every` labels every n-th bar only (a month's
    31 days); `value_format` writes the values in tooltips and the description, `axis_format`
    the axis' round steps; `whole` keeps the axis' steps whole numbers (counts). Negative values (an adjustment) are drawn as 0 high; their tooltip says the value.
    """
    step, steps = nice_scale(max((bar.value for bar in bars), default=0.0), whole=whole)
    top = step * steps
    plot_width = WIDTH - _LEFT - _RIGHT
    plot_height = HEIGHT - _TOP - _BOTTOM
    suffix = f" {unit}" if unit else ""
    safe_id = escape(chart_id, quote=True)
    description = "; ".join(f"{bar.name or bar.label}: {value_format(bar.value)}{suffix}" for bar in bars)
    parts = [
        f'<svg class="chart" id="{safe_id}" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-labelledby="{safe_id}-title {safe_id}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{safe_id}-title">{escape(title)}</title>',
        f'<desc id="{safe_id}-desc">{escape(description or empty_text)}</desc>',
    ]
    for tick in range(steps + 1):
        value = step * tick
        y = _TOP + plot_height - plot_height * tick / steps
        parts.append(f'<line class="chart-grid" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="chart-axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{escape(axis_format(value))}</text>')
    if bars:
        slot = plot_width / len(bars)
        bar_width = min(max(slot * 0.7, 1.0), _MAX_BAR_WIDTH)
        for index, bar in enumerate(bars):
            height = plot_height * max(bar.value, 0.0) / top
            x = _LEFT + slot * index + (slot - bar_width) / 2
            y = _TOP + plot_height - height
            tooltip = f"{bar.name or bar.label}: {value_format(bar.value)}{suffix}"
            parts.append(
                f'<rect class="chart-bar" x="{x:.1f}" y="{y:.1f}" width="{bar_width:.1f}" height="{height:.1f}">'
                f"<title>{escape(tooltip)}</title></rect>"
            )
            if index % max(label_every, 1) == 0:
                parts.append(
                    f'<text class="chart-label" x="{x + bar_width / 2:.1f}" y="{HEIGHT - _BOTTOM + 16}" '
                    f'text-anchor="middle">{escape(_short(bar.label))}</text>'
                )
    else:
        parts.append(f'<text class="chart-empty" x="{_LEFT + plot_width / 2:.1f}" y="{_TOP + plot_height / 2:.1f}" '
                     f'text-anchor="middle">{escape(empty_text)}</text>')
    baseline = _TOP + plot_height
    parts.append(f'<line class="chart-baseline" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{baseline}" y2="{baseline}"/>')
    parts.append("</svg>")
    return "".join(parts)
