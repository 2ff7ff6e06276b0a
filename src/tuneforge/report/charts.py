"""Hand-built inline SVG charts for the run report.

Hand-built rather than matplotlib: the report must be one self-contained file, and these two charts need only
lines, bars and text. The SVG stays small, has no embedded font paths, renders identically everywhere and takes
microseconds, and importing matplotlib just for it would add about a second to every report.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2")
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


@dataclass
class Series:
    """One line of a line chart; `markers` draws a dot per point (for sparse series such as eval loss)."""

    name: str
    points: list[tuple[float, float]] = field(default_factory=list)
    color: str = PALETTE[0]
    markers: bool = False


def nice_ticks(low: float, high: float, target: int = 5) -> list[float]:
    """About `target` round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high < low:
        low, high = high, low
    if high == low:
        pad = abs(high) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw_step = (high - low) / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw_step)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _format_tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.0e}"
    return f"{value:.6g}"


class _Frame:
    """Maps data coordinates to pixels inside the plot area and draws the axes."""

    def __init__(self, width: int, height: int, x_ticks: list[float], y_ticks: list[float], margin=(48, 16, 24, 56)):
        self.width, self.height = width, height
        self.top, self.right, self.bottom, self.left = margin
        self.x_ticks, self.y_ticks = x_ticks, y_ticks
        self.x0, self.x1 = x_ticks[0], x_ticks[-1]
        self.y0, self.y1 = y_ticks[0], y_ticks[-1]

    def px(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (x - self.x0) / span * (self.width - self.left - self.right)

    def py(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.height - self.bottom - (y - self.y0) / span * (self.height - self.top - self.bottom)

    def axes(self, x_labels: bool = True) -> list[str]:
        parts = []
        for tick in self.y_ticks:
            y = self.py(tick)
            parts.append(
                f'<line x1="{self.left}" y1="{y:.1f}" x2="{self.width - self.right}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{_format_tick(tick)}</text>'
            )
        if x_labels:
            for tick in self.x_ticks:
                x = self.px(tick)
                parts.append(
                    f'<text x="{x:.1f}" y="{self.height - self.bottom + 16}" text-anchor="middle" {_FONT}>'
                    f"{_format_tick(tick)}</text>"
                )
        base = self.height - self.bottom
        right = self.width - self.right
        parts.append(f'<line x1="{self.left}" y1="{base}" x2="{right}" y2="{base}" stroke="#6b7280"/>')
        parts.append(f'<line x1="{self.left}" y1="{self.top}" x2="{self.left}" y2="{base}" stroke="#6b7280"/>')
        return parts


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<text x="{width / 2:.0f}" y="18" text-anchor="middle" font-family="system-ui, sans-serif" font-size="13" '
        f'font-weight="600">{escape(title)}</text>' + "".join(body) + "</svg>"
    )


def _legend(entries: Sequence[tuple[str, str]], x: float, y: float) -> list[str]:
    parts = []
    for name, color in entries:
        parts.append(
            f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14:.1f}" y="{y:.1f}" {_FONT}>{escape(name)}</text>'
        )
        x += 24 + 7 * len(name)
    return parts


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str, width: int = 720,
               height: int = 320) -> str:
    """Lines over a shared x axis; non-finite points are dropped (a diverged loss must not break the chart)."""
    clean = [
        Series(s.name, [(float(x), float(y)) for x, y in s.points if math.isfinite(x) and math.isfinite(y)],
               s.color, s.markers)
        for s in series
    ]
    clean = [s for s in clean if s.points]
    if not clean:
        return _svg(width, 80, title, [f'<text x="{width / 2:.0f}" y="50" text-anchor="middle" {_FONT}>no data</text>'])
    xs = [x for s in clean for x, _ in s.points]
    ys = [y for s in clean for _, y in s.points]
    frame = _Frame(width, height, nice_ticks(min(xs), max(xs), 8), nice_ticks(min(ys), max(ys), 5))
    body = frame.axes()
    for s in clean:
        coordinates = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in sorted(s.points))
        body.append(f'<polyline fill="none" stroke="{s.color}" stroke-width="1.6" points="{coordinates}"/>')
        if s.markers or len(s.points) == 1:
            body.extend(
                f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="3" fill="{s.color}"/>' for x, y in s.points
            )
    body.append(
        f'<text x="{(frame.left + width - frame.right) / 2:.0f}" y="{height - 4}" text-anchor="middle" {_FONT}>'
        f"{escape(x_label)}</text>"
        f'<text transform="translate(14 {(frame.top + height - frame.bottom) / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle" {_FONT}>{escape(y_label)}</text>'
    )
    body.extend(_legend([(s.name, s.color) for s in clean], frame.left + 8, 36))
    return _svg(width, height, title, body)


@dataclass
class MetricBars:
    """Base and tuned means of one metric and the bootstrap interval of their difference (tuned - base)."""

    metric: str
    base: float
    tuned: float
    ci_low: float
    ci_high: float


def comparison_chart(bars: Sequence[MetricBars], *, title: str, width: int = 720, height: int = 320,
                     names: tuple[str, str] = ("base", "tuned")) -> str:
    """Base and tuned bars per metric; a whisker on the tuned bar spans base + the delta's confidence interval.

    `names` labels the two bars (legend and tooltips): a run-vs-run comparison draws A as "base" and B as "tuned".

    Drawing the interval at base + [ci_low, ci_high] puts it on the tuned bar's scale: the tuned bar's top is
    base + delta, and a whisker that does not reach down to the base bar's height means the gain excludes zero.
    """
    if not bars:
        return _svg(width, 80, title, [f'<text x="{width / 2:.0f}" y="50" text-anchor="middle" {_FONT}>no data</text>'])
    # Bounded metrics (all of tuneforge's) keep a 0..1 axis; base + an interval end can leave [0, 1] because the
    # interval is for the difference, not for the tuned mean, so whisker ends are clipped there and the exact
    # interval stays in the tooltip and the table beside the chart.
    bounded = all(0 <= v <= 1 for b in bars for v in (b.base, b.tuned))
    lower, upper = (0.0, 1.0) if bounded else (-math.inf, math.inf)
    values = [0.0, 1.0] if bounded else [0.0]
    for b in bars:
        values += [b.base, b.tuned]
        if not bounded:
            values += [b.base + b.ci_low, b.base + b.ci_high]
    y_ticks = nice_ticks(min(values), max(values), 5)
    frame = _Frame(width, height, [0.0, float(len(bars))], y_ticks)
    body = frame.axes(x_labels=False)
    slot = (width - frame.left - frame.right) / len(bars)
    bar_width = min(56.0, slot * 0.3)
    zero = frame.py(max(y_ticks[0], 0.0))
    colors = {"base": "#9ca3af", "tuned": PALETTE[0]}
    shown = dict(zip(("base", "tuned"), names))
    for index, b in enumerate(bars):
        center = frame.left + slot * (index + 0.5)
        # The tuned bar's label sits left of its whisker so the two never overlap.
        for offset, key, value, label_x, anchor in (
            (-bar_width, "base", b.base, center - bar_width / 2, "middle"),
            (0.0, "tuned", b.tuned, center + 3, "start"),
        ):
            top = frame.py(value)
            body.append(
                f'<rect x="{center + offset:.1f}" y="{min(top, zero):.1f}" width="{bar_width:.1f}" '
                f'height="{abs(zero - top):.1f}" fill="{colors[key]}"><title>{escape(b.metric)} {escape(shown[key])}: '
                f"{value:.4f}</title></rect>"
                f'<text x="{label_x:.1f}" y="{top - 4:.1f}" text-anchor="{anchor}" {_FONT}>{value:.3f}</text>'
            )
        whisker_x = center + bar_width * 0.85
        low = frame.py(min(max(b.base + b.ci_low, lower), upper))
        high = frame.py(min(max(b.base + b.ci_high, lower), upper))
        body.append(
            f'<g stroke="#111827" stroke-width="1.5"><line x1="{whisker_x:.1f}" y1="{low:.1f}" x2="{whisker_x:.1f}" '
            f'y2="{high:.1f}"/><line x1="{whisker_x - 5:.1f}" y1="{low:.1f}" x2="{whisker_x + 5:.1f}" y2="{low:.1f}"/>'
            f'<line x1="{whisker_x - 5:.1f}" y1="{high:.1f}" x2="{whisker_x + 5:.1f}" y2="{high:.1f}"/>'
            f"<title>delta interval: [{b.ci_low:+.4f}, {b.ci_high:+.4f}]</title></g>"
            f'<text x="{center:.1f}" y="{height - frame.bottom + 16}" text-anchor="middle" {_FONT}>'
            f"{escape(b.metric)}</text>"
        )
    body.extend(_legend([(shown["base"], colors["base"]),
                         (f"{shown['tuned']} (whisker: {shown['base']} + delta CI)", colors["tuned"])],
                        frame.left + 8, 36))
    return _svg(width, height, title, body)


# A marker up to this many times the longest row stretches the histogram's axis; farther ones are named off-axis.
_NEAR = 1.5


def histogram_chart(edges: Sequence[float], counts: Sequence[int], *, title: str, x_label: str,
                    markers: Sequence[tuple[float, str]] = (), width: int = 720, height: int = 260) -> str:
    """Bars over bins [edges[k], edges[k+1]) and vertical marker lines on ONE numeric x axis.

    The axis spans 0 to the data (the last edge), stretched to a marker only when that marker lies within
    `_NEAR` times the data: a bar and a marker at the same value sit at the same x. A limit far past the longest
    row (a context window of 8192 over rows of 60 tokens) would squeeze every bar into a sliver at the left, so it
    is named at the axis' right end with an arrow instead of drawn as a line.
    """
    if not counts or len(edges) != len(counts) + 1:
        return _svg(width, 80, title, [f'<text x="{width / 2:.0f}" y="50" text-anchor="middle" {_FONT}>no data</text>'])
    data_max = float(edges[-1]) or 1.0
    x_max = max([data_max] + [float(value) for value, _ in markers if float(value) <= data_max * _NEAR])
    frame = _Frame(width, height, nice_ticks(0.0, x_max or 1.0, 8), nice_ticks(0.0, max(max(counts), 1), 4),
                   margin=(36, 16, 36, 56))
    body = frame.axes()
    base = frame.py(0.0)
    for low, high, count in zip(edges, edges[1:], counts):
        left, right, top = frame.px(low), frame.px(high), frame.py(count)
        # A 1-unit gap separates wide bars; narrow ones (a far-away marker compresses them) stay solid.
        gap = 1.0 if right - left > 3 else 0.0
        body.append(f'<rect x="{left:.2f}" y="{top:.1f}" width="{right - left - gap:.2f}" '
                    f'height="{base - top:.1f}" fill="{PALETTE[0]}"><title>{low:g}-{high:g}: {count}</title></rect>')
    for k, (value, label) in enumerate(markers):
        x = frame.px(value)
        color = PALETTE[4] if k % 2 == 0 else PALETTE[3]
        if value > frame.x1:  # off the axis: named at its right end, no line
            body.append(f'<text x="{width - frame.right:.1f}" y="{frame.top + 12 + 14 * k}" text-anchor="end" '
                        f'fill="{color}" {_FONT}>{escape(label)} \u2192<title>{escape(label)}: beyond the axis '
                        f"(longest row {edges[-1]:g})</title></text>")
            continue
        # Labels of markers in the right half go left of their line so they stay inside the chart.
        anchor, dx = ("end", -4) if x > (frame.left + width - frame.right) / 2 else ("start", 4)
        body.append(f'<line x1="{x:.2f}" y1="{frame.top}" x2="{x:.2f}" y2="{base:.1f}" stroke="{color}" '
                    f'stroke-width="2" stroke-dasharray="4 2"><title>{escape(label)}</title></line>'
                    f'<text x="{x + dx:.1f}" y="{frame.top + 12 + 14 * k}" text-anchor="{anchor}" fill="{color}" '
                    f"{_FONT}>{escape(label)}</text>")
    body.append(f'<text x="{(frame.left + width - frame.right) / 2:.0f}" y="{height - 4}" text-anchor="middle" '
                f"{_FONT}>{escape(x_label)}</text>")
    return _svg(width, height, title, body)


@dataclass
class IntervalSeries:
    """One series' value per group with its interval: `values[k] = (mean, ci_low, ci_high)`; None where the group
    was not measured, and a None bound where there is no interval (a plain bar)."""

    name: str
    values: list[tuple[float, float | None, float | None] | None]
    color: str = PALETTE[0]


def interval_chart(groups: Sequence[str], series: Sequence[IntervalSeries], *, title: str, width: int = 720,
                   height: int = 280) -> str:
    """Bars per group (one per series, side by side), each with a whisker over its own interval when it has one.

    For per-cohort means: unlike `comparison_chart`, the whisker is the interval of the bar's own value, so two
    cohorts whose whiskers overlap are not shown to differ.
    """
    if not groups or not series:
        return _svg(width, 80, title, [f'<text x="{width / 2:.0f}" y="50" text-anchor="middle" {_FONT}>no data</text>'])
    values = [v for s in series for triple in s.values if triple for v in triple if v is not None and math.isfinite(v)]
    bounded = all(0 <= v <= 1 for v in values)
    frame = _Frame(width, height, [0.0, float(len(groups))],
                   nice_ticks(0.0, 1.0, 5) if bounded else nice_ticks(min(values + [0.0]), max(values + [0.0]), 5))
    body = frame.axes(x_labels=False)
    slot = (width - frame.left - frame.right) / len(groups)
    bar_width = min(48.0, slot * 0.7 / len(series))
    zero = frame.py(max(frame.y0, 0.0))
    for index, group in enumerate(groups):
        center = frame.left + slot * (index + 0.5)
        left = center - bar_width * len(series) / 2
        for k, s in enumerate(series):
            if s.values[index] is None or not math.isfinite(s.values[index][0]):
                continue
            mean, low, high = s.values[index]
            x, top = left + k * bar_width, frame.py(mean)
            mid = x + bar_width / 2
            shown = f"{mean:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else "")
            body.append(f'<rect x="{x + 1:.1f}" y="{min(top, zero):.1f}" width="{bar_width - 2:.1f}" '
                        f'height="{abs(zero - top):.1f}" fill="{s.color}"><title>{escape(group)} {escape(s.name)}: '
                        f"{shown}</title></rect>")
            if low is not None and high is not None:
                y_low, y_high = frame.py(low), frame.py(high)
                body.append(f'<g stroke="#111827" stroke-width="1.5"><line x1="{mid:.1f}" y1="{y_low:.1f}" '
                            f'x2="{mid:.1f}" y2="{y_high:.1f}"/><line x1="{mid - 4:.1f}" y1="{y_low:.1f}" '
                            f'x2="{mid + 4:.1f}" y2="{y_low:.1f}"/><line x1="{mid - 4:.1f}" y1="{y_high:.1f}" '
                            f'x2="{mid + 4:.1f}" y2="{y_high:.1f}"/></g>')
        body.append(f'<text x="{center:.1f}" y="{height - frame.bottom + 16}" text-anchor="middle" {_FONT}>'
                    f"{escape(group)}</text>")
    body.extend(_legend([(s.name, s.color) for s in series], frame.left + 8, 36))
    return _svg(width, height, title, body)
