"""Small inline SVG charts and number formats for the monitoring report.

The report needs a few chart shapes, all over already-binned data. Drawing them as SVG text
costs microseconds and no dependency, where matplotlib costs about a second and a half per
run (import plus rendering); the charts stay vector (sharp when zoomed, printable), a few
kilobytes each, and carry tooltips (``<title>``) with the exact figures. Colours come from
palettes that colour-blind readers tell apart (blue against orange, ColorBrewer's RdBu,
Okabe-Ito), and every chart that shows more than one thing has a legend.

The number, date, period and axis formats here are the report's only ones: ``reports`` and
``report_performance`` both write figures with ``number`` (significant figures), periods with
``period_label`` and axes with ``nice_ticks`` and ``tick_labels``, so a figure reads the same
wherever it stands.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import itertools
import math

import numpy as np

WIDTH, HEIGHT = 320, 172
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 22, 30
REFERENCE_COLOUR, CURRENT_COLOUR = "#1f77b4", "#ff7f0e"
# Okabe-Ito: distinct for the common colour-vision deficiencies, in print and on screen.
SERIES_COLOURS = ("#0072b2", "#e69f00", "#d55e00", "#009e73", "#cc79a7")
SERIES_DASHES = ("", "6 3", "2 2", "8 3 2 3", "1 3")
# ColorBrewer RdBu (colour-blind safe), blue for "far below the threshold", near-white at
# the threshold, red far above: one stop per doubling of score / threshold.
RATIO_STOPS = (
    "#2166ac",
    "#4393c3",
    "#92c5de",
    "#d1e5f0",
    "#f7f7f7",
    "#fddbc7",
    "#f4a582",
    "#d6604d",
    "#b2182b",
)


# -- numbers for reading ---------------------------------------------------------------------
def number(value: float | None, digits: int = 3) -> str:
    """``digits`` significant figures, thousands separated, never in scientific notation
    between 0.0001 and a trillion: 0.556 beside 0.00433 beside 131 beside 12,300."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    rounded = float(f"{value:.{digits - 1}e}")  # 9.996 becomes 10.0 before the layout below
    exponent = math.floor(math.log10(abs(rounded)))
    if exponent >= digits - 1:
        return f"{rounded:,.0f}"
    if exponent < -4:
        return f"{rounded:.{digits - 1}e}"
    return f"{rounded:.{digits - 1 - exponent}f}"


def percent(share: float | None, digits: int = 3) -> str:
    """A share as a percentage to ``digits`` significant figures: 66.7%, 0.595%, 100%."""
    if share is None or not math.isfinite(share):
        return "n/a"
    if share in (0, 1):
        return f"{share:.0%}"
    return f"{number(share * 100, digits)}%"


def date_label(stamp: str | dt.datetime | None) -> str:
    """A moment as a date, with the time only when it is not midnight: ``2012-07-01``; text
    that is not an ISO time stays as it is."""
    if stamp is None or stamp == "":
        return ""
    if isinstance(stamp, dt.datetime):
        moment = stamp
    else:
        try:
            moment = dt.datetime.fromisoformat(str(stamp))
        except ValueError:
            return str(stamp)
    if (moment.hour, moment.minute, moment.second) == (0, 0, 0):
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%d %H:%M")


def period_label(start: str | dt.datetime | None, end: str | dt.datetime | None) -> str:
    """A window as ``2012-07-01 → 2012-07-08`` (start included, end excluded): the one way
    the report writes a period."""
    if not start and not end:
        return "latest rows"
    return f"{date_label(start)} → {date_label(end)}"


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten apart) covering ``low..high``;
    ``nice_ticks(0, top)`` for an axis from zero."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:  # one value: a little room around it (from zero: up to one)
        pad = abs(low) * 0.1 or 1.0
        low, high = (low - pad if low else low), high + pad
        if high <= low:
            return [0.0, 1.0]
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    last = math.ceil(high / step - 1e-9) * step
    return [round(first + k * step, 12) for k in range(round((last - first) / step) + 1)]


def tick_labels(ticks: list[float]) -> list[str]:
    """Axis labels. Evenly spaced ticks get as many decimals as their step needs, all alike:
    50, 75, 100 or 0.2, 0.4 or 0.25, 0.50 (not 50.0 or 0.200); other values (a histogram's
    outer edges and median) and very large or small ones get ``number``'s figures."""
    steps = [b - a for a, b in itertools.pairwise(ticks)]
    if not steps or max(abs(t) for t in ticks) >= 1e6:
        return [number(t) for t in ticks]
    step = abs(steps[0]) or 1.0
    if step < 1e-4 or any(abs(s - steps[0]) > step * 1e-6 for s in steps):
        return [number(t) for t in ticks]
    decimals = 0
    while decimals < 6 and abs(round(step, decimals) - step) > step * 1e-6:
        decimals += 1
    return [f"{t:,.{decimals}f}" if t else "0" for t in ticks]


# -- histograms ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Histogram:
    """One column's reference and current shares over the same bins.

    ``edges`` are bin edges (numeric) or ``None`` for categories named by ``labels``.
    ``top``: the y-axis maximum in the chart's unit (percent of rows, or percent of rows per
    bin of the mean width for numeric bins); give the same to every window so that switching windows
    keeps the scale. ``None``: fitted to these shares.
    """

    title: str
    reference: np.ndarray
    current: np.ndarray
    edges: np.ndarray | None = None
    labels: tuple[str, ...] = ()
    drift: bool = False
    top: float | None = None


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where a histogram's current line goes for any shares: the script of the report
    redraws it for another window from ``x`` (pixels of the bin edges), ``k`` (pixels per
    unit share in each bin) and ``base`` (the pixel row of zero)."""

    x: list[float]
    k: list[float]
    base: float

    def points(self, shares: np.ndarray) -> list[tuple[float, float]]:
        """The step line of ``shares``, closed on the baseline at both ends."""
        points = [(self.x[0], self.base)]
        for left, right, share, k in zip(self.x[:-1], self.x[1:], shares, self.k, strict=True):
            points += [(left, self.base - share * k), (right, self.base - share * k)]
        return [*points, (self.x[-1], self.base)]


def densities(panel: Histogram) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin edges, and the factor from a share to the chart's unit in each bin: percent for
    categories; for numeric bins (of equal reference mass, so not of equal width, and only a
    density draws the shape) percent per bin of the mean width, which reads as a share of
    rows where the bins are even and keeps the area true where they are not."""
    if panel.edges is not None:
        edges = np.asarray(panel.edges, dtype=float)
        widths = np.diff(edges)
        mean = float(widths.mean()) if widths.size else 1.0
        scale = np.divide(100.0 * mean, widths, out=np.zeros_like(widths), where=widths > 0)
    else:
        edges = np.arange(len(panel.reference) + 1, dtype=float) - 0.5
        scale = np.full(len(panel.reference), 100.0)
    return edges, scale, np.asarray(panel.reference) * scale


def histogram_top(panel: Histogram, currents: list[np.ndarray] | None = None) -> float:
    """The y maximum that fits the reference and every current (all windows' shares)."""
    _, scale, reference = densities(panel)
    tops = [float(reference.max(initial=0))]
    tops += [float((np.asarray(c) * scale).max(initial=0)) for c in currents or [panel.current]]
    return max(tops) or 1.0


def histogram_geometry(panel: Histogram) -> Geometry:
    edges, scale, _ = densities(panel)
    top = panel.top or histogram_top(panel)
    x = Scale(edges[0], edges[-1], LEFT, WIDTH - RIGHT)
    pixels = (HEIGHT - BOTTOM - TOP) / (nice_ticks(0.0, top)[-1] or 1.0)
    return Geometry(
        [round(x(e), 1) for e in edges], [round(s * pixels, 3) for s in scale], HEIGHT - BOTTOM
    )


def histogram_svg(panel: Histogram, column: str | None = None) -> str:
    """Reference as a filled step area, current as a step line (class ``current``), y ticks
    in percent of rows (per unit of x for numeric bins), a tooltip per bin with both shares.
    ``column`` names the chart (``data-column``) for the report's window switcher."""
    edges, _, _ = densities(panel)
    top = panel.top or histogram_top(panel)
    geometry = histogram_geometry(panel)
    x = Scale(edges[0], edges[-1], LEFT, WIDTH - RIGHT)
    if panel.edges is not None:
        values = [float(edges[0]), float(np.median(edges)), float(edges[-1])]
        ticks = list(zip(map(x, values), tick_labels(values), strict=True))
    else:
        every = max(1, math.ceil(len(panel.labels) / 13))  # 24 hours + unseen: every other
        ticks = [(x(i), label) for i, label in enumerate(panel.labels) if i % every == 0]
    unit = "% of rows per mean bin" if panel.edges is not None else "% of rows"
    title_class = " class='drift'" if panel.drift else ""
    named = "" if column is None else f" data-column='{html.escape(column)}'"
    return (
        f"<svg viewBox='0 0 {WIDTH} {HEIGHT}' role='img'{named} "
        f"aria-label='{html.escape(panel.title)}'>"
        f"<text x='{WIDTH / 2}' y='14' text-anchor='middle' font-size='11'{title_class}>"
        f"{html.escape(panel.title)}</text>"
        f"{_y_axis(top, geometry.base, unit)}"
        f"<polygon points='{_points(geometry.points(np.asarray(panel.reference)))}' "
        f"fill='{REFERENCE_COLOUR}' fill-opacity='0.35' stroke='none'/>"
        f"<polyline class='current' points='{_points(geometry.points(np.asarray(panel.current)))}'"
        f" fill='none' stroke='{CURRENT_COLOUR}' stroke-width='1.5'/>"
        f"{_x_axis(ticks)}{_tooltips(panel, edges, x)}</svg>"
    )


def legend_html() -> str:
    return (
        f"<p class='legend'><span style='background:{REFERENCE_COLOUR};opacity:.35'></span>"
        f"reference <span style='background:{CURRENT_COLOUR}'></span>current</p>"
    )


# -- lines over windows ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Series:
    """One line of a ``lines_svg`` chart: a name for the legend, a value per window (None
    where the window has none)."""

    name: str
    values: list[float | None]


def lines_svg(
    title: str, labels: list[str], series: list[Series], unit: str, width: int = 900
) -> str:
    """Several series over the same windows from zero up, y ticks in ``unit``, a legend, and
    a tooltip on every marker. Each series has its own colour and dash, so it reads in
    greyscale too."""
    height, left, bottom = 230, 64, 48
    count = len(labels)
    known = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    ticks = nice_ticks(0.0, max(known, default=1.0) or 1.0)
    x = Scale(-0.5, count - 0.5, left, width - 10)
    y = Scale(0.0, ticks[-1], height - bottom, 24)
    parts = [
        f"<svg viewBox='0 0 {width} {height}' role='img' aria-label='{html.escape(title)}'>",
        f"<text x='{width / 2}' y='14' text-anchor='middle' font-size='12'>"
        f"{html.escape(title)}</text>",
    ]
    for tick, label in zip(ticks, tick_labels(ticks), strict=True):
        parts.append(
            f"<line x1='{left}' x2='{width - 10}' y1='{y(tick):.1f}' y2='{y(tick):.1f}' "
            f"stroke='{'#999' if tick == 0 else '#e5e5e5'}'/>"
            f"<text x='{left - 5}' y='{y(tick) + 4:.1f}' text-anchor='end' font-size='11'>"
            f"{label}</text>"
        )
    step = max(1, math.ceil(count / max(1, (width - left) // 80)))  # a date is ~70 pixels
    parts += [
        f"<text x='{x(i):.1f}' y='{height - bottom + 15}' text-anchor='middle' font-size='11'>"
        f"{html.escape(labels[i])}</text>"
        for i in range(0, count, step)
    ]
    legend = []
    for index, line in enumerate(series):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        dash = SERIES_DASHES[index % len(SERIES_DASHES)]
        dashed = f" stroke-dasharray='{dash}'" if dash else ""
        points = [(x(i), y(v)) for i, v in enumerate(line.values) if v is not None]
        parts.append(
            f"<polyline points='{_points(points)}' fill='none' stroke='{colour}' "
            f"stroke-width='2'{dashed}/>"
        )
        parts += [
            f"<circle cx='{x(i):.1f}' cy='{y(v):.1f}' r='3' fill='{colour}'><title>"
            f"{html.escape(labels[i])}: {html.escape(line.name)} {number(v)} "
            f"{html.escape(unit)}</title></circle>"
            for i, v in enumerate(line.values)
            if v is not None
        ]
        lx = left + 10 + 130 * index
        legend.append(
            f"<line x1='{lx}' x2='{lx + 24}' y1='{height - 10}' y2='{height - 10}' "
            f"stroke='{colour}' stroke-width='2'{dashed}/>"
            f"<text x='{lx + 28}' y='{height - 6}' font-size='11'>{html.escape(line.name)}</text>"
        )
    parts += legend
    parts.append(
        f"<text x='14' y='{(height - bottom) / 2 + 12}' font-size='11' text-anchor='middle' "
        f"transform='rotate(-90 14 {(height - bottom) / 2 + 12})'>{html.escape(unit)}</text>"
        "</svg>"
    )
    return "".join(parts)


# -- drift against thresholds ------------------------------------------------------------------
def ratio_colour(ratio: float | None) -> tuple[str, str]:
    """Background and text colours for score / threshold: RdBu over log2 of the ratio,
    from 1/16 (deep blue) through 1 (near white) to 16 and above (deep red); the text black
    or white, whichever contrasts more. Grey when there is no score."""
    if ratio is None or not math.isfinite(ratio):
        return "#d9d9d9", "#000000"
    position = min(max(math.log2(max(ratio, 2.0**-8)), -4.0), 4.0) + 4.0  # 0 .. 8
    low = min(int(position), 7)
    colour = _mix(RATIO_STOPS[low], RATIO_STOPS[low + 1], position - low)
    lightness = _luminance(colour)
    white, black = 1.05 / (lightness + 0.05), (lightness + 0.05) / 0.05  # WCAG 2 contrasts
    return colour, "#ffffff" if white >= black else "#000000"


def ratio_legend_html() -> str:
    """The heatmap's colour key, labelled in multiples of the threshold."""
    cells = "".join(
        f"<span style='background:{ratio_colour(r)[0]};color:{ratio_colour(r)[1]}'>{label}</span>"
        for r, label in (
            (1 / 16, "≤ 1/16"),
            (1 / 4, "1/4"),
            (1 / 2, "1/2"),
            (1.0, "1"),
            (2.0, "2"),
            (4.0, "4"),
            (16.0, "≥ 16"),
        )
    )
    return (
        f"<p class='ratio-legend'>score ÷ threshold: {cells} <span class='na'>no score</span></p>"
    )


def _luminance(colour: str) -> float:
    """WCAG 2's relative luminance of an sRGB colour: the better of black or white text on
    any background then has a contrast of at least 4.58 (AA asks 4.5)."""
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _mix(a: str, b: str, t: float) -> str:
    first = [int(a[i : i + 2], 16) for i in (1, 3, 5)]
    second = [int(b[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(
        f"{round(p + (q - p) * t):02x}" for p, q in zip(first, second, strict=True)
    )


# -- pieces ----------------------------------------------------------------------------------
def _y_axis(top: float, base: float, unit: str) -> str:
    """Gridlines and labels at round values, and the unit along the axis."""
    ticks = nice_ticks(0.0, top)
    pixels = (HEIGHT - BOTTOM - TOP) / (ticks[-1] or 1.0)
    parts = []
    for tick, label in zip(ticks, tick_labels(ticks), strict=True):
        py = base - tick * pixels
        parts.append(
            f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{py:.1f}' y2='{py:.1f}' "
            f"stroke='{'#999' if tick == 0 else '#eee'}'/>"
            f"<text x='{LEFT - 3}' y='{py + 3:.1f}' text-anchor='end' font-size='9'>"
            f"{label}</text>"
        )
    middle = (TOP + base) / 2
    parts.append(
        f"<text x='10' y='{middle:.1f}' font-size='9' text-anchor='middle' "
        f"transform='rotate(-90 10 {middle:.1f})'>{html.escape(unit)}</text>"
    )
    return "".join(parts)


def _x_axis(ticks: list[tuple[float, str]]) -> str:
    base = HEIGHT - BOTTOM
    return "".join(
        f"<text x='{px:.1f}' y='{base + 13}' text-anchor='middle' font-size='9'>"
        f"{html.escape(text)}</text>"
        for px, text in ticks
    )


def _tooltips(panel: Histogram, edges: np.ndarray, x: Scale) -> str:
    """An invisible hover target per bin with both shares, for exact figures on demand."""
    parts = []
    for index, (left, right) in enumerate(itertools.pairwise(edges)):
        name = panel.labels[index] if panel.edges is None else f"[{number(left)}, {number(right)})"
        parts.append(
            f"<rect x='{x(left):.1f}' y='{TOP}' width='{max(x(right) - x(left), 0.5):.1f}' "
            f"height='{HEIGHT - TOP - BOTTOM}' fill='transparent'><title>{html.escape(name)}: "
            f"reference {panel.reference[index]:.1%}, current {panel.current[index]:.1%}"
            f"</title></rect>"
        )
    return "".join(parts)


class Scale:
    """A linear map from data to pixels (the report's performance charts use it too)."""

    def __init__(self, low: float, high: float, start: float, end: float) -> None:
        span = float(high) - float(low) or 1.0
        self.low, self.start, self.factor = float(low), start, (end - start) / span

    def __call__(self, value: float) -> float:
        return self.start + (float(value) - self.low) * self.factor


def _points(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
