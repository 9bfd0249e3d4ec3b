"""Plots as inline SVG strings: no scripts, no fonts, no network."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 30, 40
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")

Line = tuple[str, Sequence[float], Sequence[float]]  # label, xs, ys


def line_chart(
    lines: Sequence[Line],
    *,
    title: str,
    x_label: str,
    y_label: str,
    bands: Sequence[tuple[float, float, str]] = (),
    log_x: bool = False,
) -> str:
    """Lines on shared axes; ``bands`` shade x ranges (fault windows)."""
    points = [(x, y) for _, xs, ys in lines for x, y in zip(xs, ys)]
    if not points:
        return _frame(title, "<text x='50%' y='50%'>no data</text>")
    fx = _log if log_x else float
    x_values = [fx(x) for x, _ in points]
    x0, x1 = min(x_values), max(x_values)
    y1 = max(y for _, y in points) or 1.0
    x1 = x1 if x1 > x0 else x0 + 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (fx(x) - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - y / (y1 * 1.05) * plot_h

    parts = []
    for start, stop, label in bands:
        left, right = sx(max(start, x0)), sx(stop)
        parts.append(
            f"<rect x='{left:.1f}' y='{TOP}' width='{max(right - left, 1):.1f}' "
            f"height='{plot_h}' fill='#fbe3e3'><title>{escape(label)}</title></rect>"
        )
    parts.append(_axes(x0, x1, y1 * 1.05, x_label, y_label, log_x=log_x))
    for index, (label, xs, ys) in enumerate(lines):
        color = COLORS[index % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
        parts.append(
            f"<polyline fill='none' stroke='{color}' stroke-width='1.6' "
            f"points='{path}'/>"
        )
        parts.append(
            f"<text x='{LEFT + 10 + 170 * index}' y='{TOP - 10}' fill='{color}' "
            f"font-size='12'>{escape(label)}</text>"
        )
    return _frame(title, "".join(parts))


def _axes(
    x0: float, x1: float, y1: float, x_label: str, y_label: str, *, log_x: bool
) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bottom = TOP + plot_h
    parts = [
        (
            f"<line x1='{LEFT}' y1='{bottom}' x2='{LEFT + plot_w}' y2='{bottom}' "
            "stroke='#444'/>"
        ),
        f"<line x1='{LEFT}' y1='{TOP}' x2='{LEFT}' y2='{bottom}' stroke='#444'/>",
    ]
    for i in range(5):
        y = y1 * i / 4
        py = bottom - plot_h * i / 4
        parts.append(
            f"<text x='{LEFT - 6}' y='{py + 4:.1f}' text-anchor='end' "
            f"font-size='11'>{_short(y)}</text>"
            f"<line x1='{LEFT}' y1='{py:.1f}' x2='{LEFT + plot_w}' y2='{py:.1f}' "
            "stroke='#eee'/>"
        )
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        px = LEFT + plot_w * i / 5
        text = _duration(10**x) if log_x else _short(x)
        parts.append(
            f"<text x='{px:.1f}' y='{bottom + 16}' text-anchor='middle' "
            f"font-size='11'>{text}</text>"
        )
    parts.append(
        f"<text x='{LEFT + plot_w / 2}' y='{HEIGHT - 6}' text-anchor='middle' "
        f"font-size='12'>{escape(x_label)}</text>"
        f"<text x='14' y='{TOP + plot_h / 2}' text-anchor='middle' font-size='12' "
        f"transform='rotate(-90 14 {TOP + plot_h / 2})'>{escape(y_label)}</text>"
    )
    return "".join(parts)


def _frame(title: str, body: str) -> str:
    return (
        f"<figure><figcaption>{escape(title)}</figcaption>"
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
        f"viewBox='0 0 {WIDTH} {HEIGHT}' font-family='sans-serif'>{body}</svg>"
        "</figure>"
    )


def _log(x: float) -> float:
    return math.log10(max(x, 1e-9))


def _short(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _duration(seconds: float) -> str:
    for limit, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if seconds >= limit:
            return f"{seconds / limit:.3g}{suffix}"
    return f"{seconds * 1e9:.3g}ns"
