"""Small inline SVG charts for the monitoring report: step histograms and a line over time.

The report needs two chart shapes, both over already-binned data. Drawing them as SVG text
costs microseconds and no dependency, where matplotlib costs about a second and a half per
run (import plus rendering); the charts stay vector (sharp when zoomed, printable), a few
kilobytes each, and carry tooltips (``<title>``) with the exact figures.
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import math

import numpy as np

WIDTH, HEIGHT = 320, 150
LEFT, RIGHT, TOP, BOTTOM = 34, 16, 22, 30
REFERENCE_COLOUR, CURRENT_COLOUR = "#1f77b4", "#ff7f0e"


@dataclasses.dataclass(frozen=True)
class Histogram:
    """One column's reference and current shares over the same bins.

    ``edges`` are bin edges (numeric) or ``None`` for categories named by ``labels``.
    """

    title: str
    reference: np.ndarray
    current: np.ndarray
    edges: np.ndarray | None = None
    labels: tuple[str, ...] = ()
    drift: bool = False


def histogram_svg(panel: Histogram) -> str:
    """Reference as a filled step area, current as a step line, densities for numeric bins."""
    if panel.edges is not None:
        edges = np.asarray(panel.edges, dtype=float)
        widths = np.diff(edges)
        scale = np.divide(1.0, widths, out=np.zeros_like(widths), where=widths > 0)
    else:
        edges = np.arange(len(panel.reference) + 1, dtype=float) - 0.5
        scale = np.ones(len(panel.reference))
    reference, current = panel.reference * scale, panel.current * scale
    top = float(max(reference.max(initial=0), current.max(initial=0))) or 1.0
    x = _Scale(edges[0], edges[-1], LEFT, WIDTH - RIGHT)
    y = _Scale(0.0, top * 1.05, HEIGHT - BOTTOM, TOP)

    def steps(values: np.ndarray) -> list[tuple[float, float]]:
        points = [(x(edges[0]), y(0.0))]
        for left, right, value in zip(edges[:-1], edges[1:], values, strict=True):
            points += [(x(left), y(value)), (x(right), y(value))]
        return [*points, (x(edges[-1]), y(0.0))]

    if panel.edges is not None:
        ticks = [(x(v), _number(v)) for v in (edges[0], float(np.median(edges)), edges[-1])]
    else:
        every = max(1, math.ceil(len(panel.labels) / 13))  # 24 hours + unseen: every other
        ticks = [(x(i), label) for i, label in enumerate(panel.labels) if i % every == 0]
    tips = _tooltips(panel, edges, x)
    title_class = " class='drift'" if panel.drift else ""
    return (
        f"<svg viewBox='0 0 {WIDTH} {HEIGHT}' role='img' aria-label='{html.escape(panel.title)}'>"
        f"<text x='{WIDTH / 2}' y='14' text-anchor='middle' font-size='11'{title_class}>"
        f"{html.escape(panel.title)}</text>"
        f"<polygon points='{_points(steps(reference))}' fill='{REFERENCE_COLOUR}' "
        f"fill-opacity='0.35' stroke='none'/>"
        f"<polyline points='{_points(steps(current))}' fill='none' "
        f"stroke='{CURRENT_COLOUR}' stroke-width='1.5'/>"
        f"{_axes(ticks, y, top)}{tips}</svg>"
    )


def line_svg(
    title: str, labels: list[str], values: list[float], baseline: float | None, unit: str
) -> str:
    """Values over windows (markers with tooltips) against a dashed reference line."""
    width, height = 900, 220
    count = len(values)
    top = max([*values, baseline or 0.0]) * 1.1 or 1.0
    x = _Scale(-0.5, count - 0.5, 60, width - 10)
    y = _Scale(0.0, top, height - 30, 10)
    points = [(x(i), y(v)) for i, v in enumerate(values)]
    markers = "".join(
        f"<circle cx='{px:.1f}' cy='{py:.1f}' r='4' fill='{CURRENT_COLOUR}'>"
        f"<title>{html.escape(label)}: {_figure(value)} {html.escape(unit)}</title></circle>"
        for (px, py), label, value in zip(points, labels, values, strict=True)
    )
    reference = (
        ""
        if baseline is None
        else f"<line x1='{x(-0.5):.1f}' x2='{x(count - 0.5):.1f}' y1='{y(baseline):.1f}' "
        f"y2='{y(baseline):.1f}' stroke='#777' stroke-dasharray='6 4'>"
        f"<title>reference: {_figure(baseline)} {html.escape(unit)}</title></line>"
        f"<text x='{x(count - 0.5) - 4:.1f}' y='{y(baseline) - 4:.1f}' text-anchor='end' "
        f"font-size='11' fill='#555'>reference {_figure(baseline)}</text>"
    )
    step = max(1, math.ceil(count / 12))
    ticks = "".join(
        f"<text x='{x(i):.1f}' y='{height - 12}' text-anchor='middle' font-size='11'>"
        f"{html.escape(labels[i])}</text>"
        for i in range(0, count, step)
    )
    grid = "".join(
        f"<text x='54' y='{y(v) + 4:.1f}' text-anchor='end' font-size='11'>{_number(v)}</text>"
        for v in np.linspace(0, top / 1.1, 4)
    )
    return (
        f"<svg viewBox='0 0 {width} {height}' role='img' aria-label='{html.escape(title)}'>"
        f"<line x1='60' x2='{width - 10}' y1='{height - 30}' y2='{height - 30}' stroke='#999'/>"
        f"<polyline points='{_points(points)}' fill='none' stroke='{CURRENT_COLOUR}' "
        f"stroke-width='2'/>{markers}{reference}{ticks}{grid}"
        f"<text x='14' y='{height / 2}' font-size='11' transform='rotate(-90 14 {height / 2})' "
        f"text-anchor='middle'>{html.escape(unit)}</text></svg>"
    )


def legend_html() -> str:
    return (
        f"<p class='legend'><span style='background:{REFERENCE_COLOUR};opacity:.35'></span>"
        f"reference <span style='background:{CURRENT_COLOUR}'></span>current</p>"
    )


def _axes(ticks: list[tuple[float, str]], y: _Scale, top: float) -> str:
    base = HEIGHT - BOTTOM
    labels = "".join(
        f"<text x='{px:.1f}' y='{base + 13}' text-anchor='middle' font-size='9'>"
        f"{html.escape(text)}</text>"
        for px, text in ticks
    )
    return (
        f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{base}' y2='{base}' stroke='#999'/>"
        f"<text x='{LEFT - 3}' y='{y(top) + 3:.1f}' text-anchor='end' font-size='9'>"
        f"{_number(top)}</text>{labels}"
    )


def _tooltips(panel: Histogram, edges: np.ndarray, x: _Scale) -> str:
    """An invisible hover target per bin with both shares, for exact figures on demand."""
    parts = []
    for index, (left, right) in enumerate(itertools.pairwise(edges)):
        name = (
            panel.labels[index] if panel.edges is None else f"[{_number(left)}, {_number(right)})"
        )
        parts.append(
            f"<rect x='{x(left):.1f}' y='{TOP}' width='{max(x(right) - x(left), 0.5):.1f}' "
            f"height='{HEIGHT - TOP - BOTTOM}' fill='transparent'><title>{html.escape(name)}: "
            f"reference {panel.reference[index]:.1%}, current {panel.current[index]:.1%}"
            f"</title></rect>"
        )
    return "".join(parts)


class _Scale:
    """A linear map from data to pixels."""

    def __init__(self, low: float, high: float, start: float, end: float) -> None:
        span = float(high) - float(low) or 1.0
        self.low, self.start, self.factor = float(low), start, (end - start) / span

    def __call__(self, value: float) -> float:
        return self.start + (float(value) - self.low) * self.factor


def _points(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in points)


def _number(value: float) -> str:
    return f"{value:.3g}"


def _figure(value: float) -> str:
    """A metric's value: four significant digits, whatever its scale (an RMSE of 81.25 or
    an F1 of 0.8312)."""
    return f"{value:.4g}"
