# ruff: noqa: E501 - HTML fragments read best on one line each
"""The performance part of the monitoring report: metrics over time, where the model is off.

It reads only the window results (as written to ``monitoring.json``): each window's
``performance`` (every metric of the task, the reference's, the watched one and its
threshold), ``diagnostics`` (binned by ``core.diagnostics``) and ``segments``. Charts are
inline SVG drawn here from those few numbers: no JavaScript, no network, a few kilobytes per
window at any row count. Each window's diagnostics are pre-rendered in a block of class
``per-window``: the report's window picker shows the chosen window's, as it does its drift
table (the latest without script).

Colours are colour-blind safe: Okabe-Ito for lines and markers, viridis for the heatmaps, and
every colour has a legend or a text twin (tooltips, tables).
"""

from __future__ import annotations

import html
import math
import typing as T

from bikes.core.monitoring import CLASSIFICATION_METRICS, HIGHER_IS_BETTER, REGRESSION_METRICS
from bikes.io.charts import (
    Scale,
    date_label,
    nice_ticks,
    number,
    percent,
    period_label,
    tick_labels,
)

BLUE, ORANGE, VERMILLION, GREEN, SKY, PURPLE, YELLOW = (
    "#0072B2",
    "#E69F00",
    "#D55E00",
    "#009E73",
    "#56B4E9",
    "#CC79A7",
    "#F0E442",
)
SERIES = (BLUE, ORANGE, GREEN, PURPLE, SKY, VERMILLION, YELLOW)
"""Okabe-Ito, in the order classes get them."""
VIRIDIS = ("#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725")
"""Eight viridis steps, from the fewest rows to the most."""
GREY = "#777"

PERFORMANCE_STYLE = """
.perf-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:.5rem}
.perf-window{border:1px solid #ddd;border-radius:.3rem;margin:.3rem 0;padding:.2rem .6rem}.perf-summary{font-weight:600}
g.box.chosen rect{stroke:#222;stroke-width:2.5}
.perf-note{color:#555;font-size:.9em}.perf-legend span{display:inline-block;width:1.4rem;height:.7rem;margin:0 .3rem 0 .9rem;vertical-align:middle}
table.confusion td{min-width:3.5rem}table.confusion td.cell{font-variant-numeric:tabular-nums}
.perf-worse{color:#D55E00;font-weight:600}
"""
"""CSS for the classes used here; the report appends it to its own style."""

CHOSEN = (
    "Shown: the window chosen in the window picker (the latest at first); choose another there "
    "or click a window in the drift heatmap."
)
"""What the per-window views say about which window they show."""

UNITS = {
    "r2": "1 is perfect",
    "mape": "share of actual + 1",
    "accuracy": "share",
    "precision": "share",
    "recall": "share",
    "f1": "share",
    "roc_auc": "0.5 is chance",
    "log_loss": "nats",
}


# -- entry point ------------------------------------------------------------------------------
def performance_html(windows: list[dict[str, T.Any]], task: str) -> str:
    """The performance sections of the report (each with its own ``<h2>``) for ``task``
    (regression or classification), or one paragraph saying why there is none."""
    labelled = [w for w in windows if (w.get("performance") or {}).get("current")]
    if not labelled:
        return (
            "<h2 id='performance'>Performance over time</h2><p class='perf-note'>No window has "
            "labelled rows (a target joined to the predictions): performance is unknown.</p>"
        )
    target = next(
        (
            str(w["diagnostics"]["target"])
            for w in windows
            if (w.get("diagnostics") or {}).get("target")
        ),
        None,
    )
    parts = [_metrics_section(windows, task, target)]
    if task == "classification":
        parts.append(_classification_section(windows))
    else:
        parts.append(_regression_section(windows, target))
    parts.append(_segments_section(windows))
    return "".join(parts)


# -- metrics over time ------------------------------------------------------------------------
def _metrics_section(windows: list[dict[str, T.Any]], task: str, target: str | None) -> str:
    known = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    present = {
        name for w in windows for name in ((w.get("performance") or {}).get("current") or {})
    }
    metrics = [m for m in known if m in present] + sorted(present - set(known))
    latest = next(w["performance"] for w in reversed(windows) if w.get("performance"))
    watched, threshold = latest.get("metric"), latest.get("threshold")
    charts = "".join(_metric_chart(windows, m, m == watched, threshold, target) for m in metrics)
    reference = latest.get("reference_source") or {}
    kind = str(reference.get("kind", "reference")).replace("_", "-")
    return (
        "<h2 id='performance'>Performance over time</h2>"
        f"<p class='perf-note'>Every metric of the task per window (points) against the "
        f"reference's ({html.escape(kind)}, dashed line); the watched metric, "
        f"{html.escape(str(watched))}, alerts beyond the dotted line "
        f"({percent(threshold)} worse than the reference). Hover a point for its figures.</p>"
        + _legend(
            [
                ("marker", BLUE, "window"),
                ("marker", VERMILLION, "degraded (watched metric)"),
                ("dash", GREY, "reference"),
                ("dot", VERMILLION, "alert threshold"),
            ]
        )
        + f"<div class='perf-grid' id='performance-metrics'>{charts}</div>"
    )


def _metric_chart(
    windows: list[dict[str, T.Any]],
    metric: str,
    watched: bool,
    threshold: float | None,
    target: str | None,
) -> str:
    width, height, _ = size = (380, 190, (52, 12, 24, 40))
    values: list[tuple[int, float, dict[str, T.Any]]] = []
    reference = None
    for index, w in enumerate(windows):
        performance = w.get("performance") or {}
        value = (performance.get("current") or {}).get(metric)
        if _finite(value):
            values.append((index, float(value), performance))
        before = (performance.get("reference") or {}).get(metric)
        if _finite(before):
            reference = float(before)
    higher = metric in HIGHER_IS_BETTER
    alert = None
    if watched and reference is not None and threshold is not None:
        alert = (
            reference - threshold * abs(reference)
            if higher
            else reference + threshold * abs(reference)
        )
    span = [v for _, v, _ in values] + [v for v in (reference, alert) if v is not None]
    unit = UNITS.get(metric) or (f"{target} units" if target else "target units")
    x, y, frame = _window_axes(windows, span, size, 5, f"{metric} ({unit})")
    marks = []
    for index, value, performance in values:
        degraded = watched and bool(performance.get("degraded"))
        change = performance.get("relative_change") if watched else _change(value, reference)
        said = f"{_label(windows[index])}: {metric} {number(value)}"
        if reference is not None:
            said += f" (reference {number(reference)}{'' if change is None else ', ' + _signed_percent(change)})"
        if degraded:
            said += ", degraded"
        marks.append(
            f"<circle cx='{x(index):.1f}' cy='{y(value):.1f}' r='3.5' "
            f"fill='{VERMILLION if degraded else BLUE}'><title>{html.escape(said)}</title></circle>"
        )
    line = _polyline([(x(i), y(v)) for i, v, _ in values], BLUE, 1.5)
    lines = ""
    if reference is not None:
        lines += _hline(
            x, y, reference, len(windows), GREY, "6 4", f"reference {number(reference)}"
        )
    if alert is not None:
        lines += _hline(
            x, y, alert, len(windows), VERMILLION, "2 3", f"alert at {number(alert)}", right=False
        )
    title = (
        f"{metric} ({'higher' if higher else 'lower'} is better{', watched' if watched else ''})"
    )
    return _svg(width, height, title, frame + lines + line + "".join(marks), f"metric-{metric}")


# -- regression -------------------------------------------------------------------------------
def _regression_section(windows: list[dict[str, T.Any]], target: str | None) -> str:
    diagnosed = [(i, w) for i, w in enumerate(windows) if _diagnostics(w, "regression")]
    if not diagnosed:
        return ""
    unit = f"{target}" if target else "target"
    blocks = {}
    for index, w in diagnosed:
        figures = w["diagnostics"]
        quantiles = figures["residual_quantiles"]
        summary = (
            f"{html.escape(_period(w))} · {figures['rows']:,} labelled rows · residual median "
            f"{number(quantiles.get('0.5'))}, mean {number(figures['residual_mean'])}"
        )
        blocks[index] = f"<p class='perf-summary'>{summary}</p>{_heatmap(figures, unit)}"
    return (
        "<h2 id='performance-residuals'>Residuals by window</h2>"
        f"<p class='perf-note'>Residual = actual - predicted, in {html.escape(unit)} units: the "
        "box holds the middle half of the window's rows, the whiskers 90% (5% to 95%), the "
        "bar is the median, the diamond the mean. Above zero the model predicts too low.</p>"
        + _legend(
            [
                ("box", SKY, "25% to 75%"),
                ("line", BLUE, "5% to 95%, median"),
                ("marker", ORANGE, "mean"),
            ]
        )
        + _residual_chart(windows, unit)
        + "<h2 id='performance-predicted-actual'>Predicted against actual</h2>"
        "<p class='perf-note'>Rows per cell of predicted against actual value (shared edges; "
        f"on the dashed diagonal the prediction is exact). {CHOSEN}</p>"
        + _per_window(windows, "predicted-actual", blocks)
    )


def _residual_chart(windows: list[dict[str, T.Any]], unit: str) -> str:
    width, height, _ = size = (900, 240, (60, 12, 24, 40))
    boxes = [(i, w["diagnostics"]) for i, w in enumerate(windows) if _diagnostics(w, "regression")]
    span = [0.0]
    for _, figures in boxes:
        span += [v for v in figures["residual_quantiles"].values() if _finite(v)]
    x, y, frame = _window_axes(windows, span, size, 12, f"residual ({unit} units)")
    half = max(min((x(1) - x(0)) * 0.3, 12.0), 1.5)
    shapes = [_hline(x, y, 0.0, len(windows), GREY, "6 4", "")]
    for index, figures in boxes:
        q = {k: v for k, v in figures["residual_quantiles"].items() if _finite(v)}
        if len(q) < 5:
            continue
        cx, mean = x(index), figures.get("residual_mean")
        tip = html.escape(
            f"{_label(windows[index])}: residual 5% {number(q['0.05'])}, 25% {number(q['0.25'])}, "
            f"median {number(q['0.5'])}, 75% {number(q['0.75'])}, 95% {number(q['0.95'])}, mean "
            f"{number(mean)} {unit} ({figures['rows']:,} rows)"
        )
        shapes.append(
            f"<g class='box' data-window='{index}'><title>{tip}</title>"
            f"<line x1='{cx:.1f}' x2='{cx:.1f}' y1='{y(q['0.05']):.1f}' y2='{y(q['0.95']):.1f}' stroke='{BLUE}'/>"
            f"<rect x='{cx - half:.1f}' y='{y(q['0.75']):.1f}' width='{2 * half:.1f}' "
            f"height='{max(y(q['0.25']) - y(q['0.75']), 0.5):.1f}' fill='{SKY}' stroke='{BLUE}'/>"
            f"<line x1='{cx - half:.1f}' x2='{cx + half:.1f}' y1='{y(q['0.5']):.1f}' y2='{y(q['0.5']):.1f}' "
            f"stroke='{BLUE}' stroke-width='2'/>"
            + (
                ""
                if not _finite(mean)
                else f"<path d='M{cx:.1f} {y(mean) - 4:.1f}l4 4l-4 4l-4 -4z' fill='{ORANGE}'/>"
            )
            + "</g>"
        )
    return _svg(
        width,
        height,
        "Residuals (actual - predicted) by window",
        frame + "".join(shapes),
        "residuals",
    )


def _heatmap(figures: dict[str, T.Any], unit: str) -> str:
    """Rows per (actual, predicted) cell, viridis on a log scale, one path per colour step."""
    edges = [float(e) for e in figures["edges"]]
    counts = figures["counts"]
    bins = len(edges) - 1
    cell = max(200 // max(bins, 1), 4)
    left, top, bottom, side = 58, 24, 40, cell * bins
    width, height = left + side + 130, top + side + bottom
    peak = max((c for row in counts for c in row), default=0)
    levels = _levels(peak)
    paths: dict[int, list[str]] = {}
    level_of = [
        [next(k for k, (_, high) in enumerate(levels) if c <= high) if c else -1 for c in row]
        for row in counts
    ]  # [actual bin (x)][predicted bin (y, upwards)]
    for j in range(bins):  # each row of the picture, neighbours of one level as one rectangle
        i = 0
        while i < bins:
            level, run = level_of[i][j], 1
            while i + run < bins and level_of[i + run][j] == level:
                run += 1
            if level >= 0:
                paths.setdefault(level, []).append(
                    f"M{left + i * cell} {top + side - (j + 1) * cell}h{run * cell}v{cell}h-{run * cell}z"
                )
            i += run
    cells = "".join(
        f"<path d='{''.join(d)}' fill='{VIRIDIS[k]}'><title>{_count_range(levels[k])} rows per cell</title></path>"
        for k, d in sorted(paths.items())
    )
    scale = Scale(edges[0], edges[-1], 0, side)
    ticks = nice_ticks(edges[0], edges[-1], 5)
    inside = [t for t in ticks if edges[0] <= t <= edges[-1]]
    frame = _frame(
        left + side + 10,
        height,
        (left, 10, top, bottom),
        x_ticks=_placed(lambda t: left + scale(t), inside),
        y_ticks=_placed(lambda t: top + side - scale(t), inside),
        x_title=f"actual {unit}",
        y_title=f"predicted {unit}",
    )
    diagonal = (
        f"<line x1='{left}' y1='{top + side}' x2='{left + side}' y2='{top}' stroke='{GREY}' "
        "stroke-dasharray='5 4'><title>exact prediction</title></line>"
    )
    legend = "".join(
        f"<rect x='{left + side + 22}' y='{top + 20 + 14 * k}' width='12' height='12' fill='{VIRIDIS[k]}'/>"
        f"<text x='{left + side + 38}' y='{top + 30 + 14 * k}' font-size='10'>{_count_range(level)}</text>"
        for k, level in enumerate(levels)
    )
    legend += f"<text x='{left + side + 22}' y='{top + 12}' font-size='10'>rows per cell</text>"
    return _svg(
        width,
        height,
        f"Predicted against actual, {figures['rows']:,} rows",
        frame + cells + diagonal + legend,
        "predicted-actual",
        max_width=460,
    )


def _levels(peak: int) -> list[tuple[int, int]]:
    """Up to eight count ranges, about equal on a log scale, covering 1..peak."""
    if peak <= 0:
        return []
    steps = len(VIRIDIS)
    bounds = sorted({max(1, round(peak ** (k / steps))) for k in range(1, steps + 1)})
    levels, low = [], 1
    for high in bounds:  # the last bound is the peak: every count has a level
        if high >= low:
            levels.append((low, high))
            low = high + 1
    return levels


def _count_range(level: tuple[int, int]) -> str:
    low, high = level
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


# -- classification ---------------------------------------------------------------------------
def _classification_section(windows: list[dict[str, T.Any]]) -> str:
    diagnosed = [(i, w) for i, w in enumerate(windows) if _diagnostics(w, "classification")]
    if not diagnosed:
        return ""
    blocks = {}
    for index, w in diagnosed:
        figures = w["diagnostics"]
        curves = figures.get("curves") or []
        aucs = ", ".join(
            f"AUC {html.escape(str(c['label']))} {number(c['roc']['auc'])}"
            for c in curves
            if _finite(c["roc"].get("auc"))
        )
        summary = f"{html.escape(_period(w))} · {figures['rows']:,} labelled rows" + (
            f" · {aucs}" if aucs else ""
        )
        drawn = ""
        if curves:
            drawn = f"<div class='perf-grid'>{_roc_chart(curves)}{_calibration_chart(curves)}</div>"
        blocks[index] = f"<p class='perf-summary'>{summary}</p>{_confusion_table(figures)}{drawn}"
    scored = any(w["diagnostics"].get("curves") for _, w in diagnosed)
    note = (
        "ROC (true against false positive rate, every threshold) and calibration (the share "
        "of rows of the class against the mean predicted probability, ten bins) from the "
        "model's probabilities."
        if scored
        else "No ROC or calibration: the rows carry no probabilities (name them in the "
        "contract's score)."
    )
    return (
        "<h2 id='performance-classes'>Classes by window</h2>"
        "<p class='perf-note'>Confusion matrix: rows are the actual class, columns the "
        f"predicted one; each cell gives its rows and their share of the actual class. {note} "
        f"{CHOSEN}</p>" + _per_window(windows, "classes", blocks)
    )


def _confusion_table(figures: dict[str, T.Any]) -> str:
    labels = [html.escape(str(label)) for label in figures["labels"]]
    head = "".join(f"<th scope='col'>{label}</th>" for label in labels)
    rows = []
    for label, counts in zip(labels, figures["confusion_matrix"], strict=True):
        total = sum(counts)
        cells = []
        for column, count in enumerate(counts):
            share = count / total if total else 0.0
            text = "#fff" if share > 0.85 else "#222"  # the better contrast on that blue
            cells.append(
                f"<td class='cell' style='background:rgba(0,114,178,{share:.2f});color:{text}'"
                f" data-label='{labels[column]}'>{count:,}<br><small>{percent(share)}</small></td>"
            )
        rows.append(f"<tr><th scope='row'>{label}</th>{''.join(cells)}<td>{total:,}</td></tr>")
    return (
        "<table class='confusion'><caption>Confusion matrix (actual by row, predicted by "
        f"column)</caption><tr><th>actual \\ predicted</th>{head}<th>rows</th></tr>"
        f"{''.join(rows)}</table>"
    )


UNIT_CHART = (340, 300, (48, 12, 24, 40))
"""Width, height and margins (left, right, top, bottom) of the ROC and calibration charts."""
Drawn = T.Callable[[int, dict[str, T.Any], str, Scale, Scale], tuple[str, str]]
"""Draws one class's curve in the unit square: (index, curve, colour, x, y) -> marks, legend."""


def _roc_chart(curves: list[dict[str, T.Any]]) -> str:
    width, height, (_, right, _, bottom) = UNIT_CHART

    def draw(k: int, curve: dict[str, T.Any], colour: str, x: Scale, y: Scale) -> tuple[str, str]:
        roc = curve["roc"]
        points = [
            (x(a), y(b))
            for a, b in zip(roc["fpr"], roc["tpr"], strict=True)
            if _finite(a) and _finite(b)
        ]
        name = f"{curve['label']}: AUC {number(roc.get('auc'))}"
        row = height - bottom - 8 - 14 * (len(curves) - 1 - k)
        key = _legend_entry(width - right - 120, row, colour, name)
        return _polyline(points, colour, 2, name), key

    axes = ("false positive rate", "true positive rate", "chance")
    return _unit_chart("ROC", "roc", axes, curves, draw)


def _calibration_chart(curves: list[dict[str, T.Any]]) -> str:
    _, _, (left, _, top, _) = UNIT_CHART

    def draw(k: int, curve: dict[str, T.Any], colour: str, x: Scale, y: Scale) -> tuple[str, str]:
        calibration = curve["calibration"]
        triples = [
            (a, b, n)
            for a, b, n in zip(
                calibration["mean_predicted"],
                calibration["observed"],
                calibration["rows"],
                strict=True,
            )
            if _finite(a) and _finite(b)
        ]
        marks = _polyline([(x(a), y(b)) for a, b, _ in triples], colour, 1.5) + "".join(
            f"<circle cx='{x(a):.1f}' cy='{y(b):.1f}' r='3' fill='{colour}'><title>"
            f"{html.escape(str(curve['label']))}: predicted {number(a)}, observed {number(b)}, {n:,} rows</title></circle>"
            for a, b, n in triples
        )
        return marks, _legend_entry(left + 8, top + 8 + 14 * k, colour, str(curve["label"]))

    axes = ("mean predicted probability", "observed share", "perfectly calibrated")
    return _unit_chart("Calibration", "calibration", axes, curves, draw)


def _unit_chart(
    title: str,
    name: str,
    axes: tuple[str, str, str],
    curves: list[dict[str, T.Any]],
    draw: Drawn,
) -> str:
    """ROC and calibration alike: the unit square (0 to 1 on either axis, gridlines at the
    quarters), its dashed diagonal (``axes``: the x and y titles and what the diagonal means
    there), then each class's curve in its colour and a legend."""
    width, height, margins = UNIT_CHART
    left, right, top, bottom = margins
    x = Scale(0, 1, left, width - right)
    y = Scale(0, 1, height - bottom, top)
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    x_title, y_title, diagonal = axes
    frame = _frame(width, height, margins, _placed(x, ticks), _placed(y, ticks), x_title, y_title)
    frame += (
        f"<line x1='{x(0)}' y1='{y(0)}' x2='{x(1)}' y2='{y(1)}' stroke='{GREY}' "
        f"stroke-dasharray='5 4'><title>{html.escape(diagonal)}</title></line>"
    )
    drawn = [draw(k, curve, SERIES[k % len(SERIES)], x, y) for k, curve in enumerate(curves)]
    body = frame + "".join(marks for marks, _ in drawn) + "".join(key for _, key in drawn)
    return _svg(width, height, title, body, name, 420)


# -- segments ---------------------------------------------------------------------------------
def _segments_section(windows: list[dict[str, T.Any]]) -> str:
    segmented = [(i, w) for i, w in enumerate(windows) if w.get("segments")]
    if not segmented:
        return ""
    performance = segmented[-1][1].get("performance") or {}
    higher = bool(
        performance.get("higher_is_better", performance.get("metric") in HIGHER_IS_BETTER)
    )
    threshold = performance.get("threshold")
    metric = html.escape(
        str(performance.get("metric") or segmented[-1][1]["segments"][0]["metric"])
    )
    blocks = {
        i: f"<p class='perf-summary'>{html.escape(_period(w))}</p>"
        + _segment_table(w["segments"], metric, higher, threshold)
        for i, w in segmented
    }
    return (
        "<h2 id='performance-segments'>Performance per segment</h2>"
        f"<p class='perf-note'>{metric} per segment against the same segment of the reference; "
        f"marked when {percent(threshold)} or more worse ({'higher' if higher else 'lower'} is "
        f"better). {CHOSEN}</p>" + _per_window(windows, "segments", blocks)
    )


def _segment_table(
    segments: list[dict[str, T.Any]], metric: str, higher: bool, threshold: float | None
) -> str:
    rows = []
    for s in segments:
        change = s.get("relative_change")
        worse = (
            change is not None
            and threshold is not None
            and (-change if higher else change) >= threshold
        )
        css = " class='perf-worse'" if worse else ""
        rows.append(
            f"<tr><td>{html.escape(str(s['segment']))}</td><td>{html.escape(str(s['value']))}</td>"
            f"<td>{s['rows']:,}</td><td>{number(s['current'])}</td><td>{number(s.get('reference'))}</td>"
            f"<td{css}>{'' if change is None else _signed_percent(change)}{' worse' if worse else ''}</td></tr>"
        )
    return (
        f"<table class='segments-table'><tr><th>segment</th><th>value</th><th>rows</th><th>{metric}</th>"
        f"<th>reference</th><th>change</th></tr>{''.join(rows)}</table>"
    )


# -- numbers and labels -----------------------------------------------------------------------
def _placed(scale: T.Callable[[float], float], ticks: list[float]) -> list[tuple[float, str]]:
    """``(pixel, label)`` of each tick."""
    return list(zip([scale(t) for t in ticks], tick_labels(ticks), strict=True))


def _signed_percent(change: float) -> str:
    return f"{'+' if change > 0 else ''}{percent(change)}"


def _change(value: float, reference: float | None) -> float | None:
    return None if reference is None or reference == 0 else (value - reference) / abs(reference)


def _finite(value: object) -> T.TypeGuard[float]:
    """A real number (not a bool, not NaN or infinite): what a figure must be to be drawn."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _label(window: dict[str, T.Any]) -> str:
    return date_label((window.get("window") or {}).get("start")) or "latest rows"


def _period(window: dict[str, T.Any]) -> str:
    span = window.get("window") or {}
    return period_label(span.get("start"), span.get("end"))


def _diagnostics(window: dict[str, T.Any], task: str) -> bool:
    figures = window.get("diagnostics") or {}
    return figures.get("task") == task and bool(figures.get("rows"))


# -- SVG --------------------------------------------------------------------------------------
def _svg(
    width: int, height: int, title: str, body: str, name: str, max_width: int | None = None
) -> str:
    style = f" style='max-width:{max_width}px'" if max_width else ""
    return (
        f"<svg viewBox='0 0 {width} {height}' role='img' aria-label='{html.escape(title)}' "
        f"data-chart='{name}'{style}><text x='{width / 2:.0f}' y='15' text-anchor='middle' "
        f"font-size='12'>{html.escape(title)}</text>{body}</svg>"
    )


def _frame(
    width: int,
    height: int,
    margins: tuple[int, int, int, int],
    x_ticks: list[tuple[float, str]],
    y_ticks: list[tuple[float, str]],
    x_title: str,
    y_title: str,
) -> str:
    """Axes with tick marks, tick labels, light grid lines and axis titles. Lines of a kind
    share one path and labels one group's attributes: a chart's frame stays under 1 kB."""
    left, right, top, bottom = margins
    base, end = height - bottom, width - right
    grid = "".join(f"M{left} {py:.1f}H{end}" for py, _ in y_ticks)
    marks = "".join(f"M{px:.1f} {base}v4" for px, _ in x_ticks)
    marks += "".join(f"M{left - 4} {py:.1f}h4" for py, _ in y_ticks)
    x_labels = "".join(
        f"<text x='{px:.1f}' y='{base + 15}'>{html.escape(text)}</text>" for px, text in x_ticks
    )
    y_labels = "".join(
        f"<text x='{left - 6}' y='{py + 3.5:.1f}'>{html.escape(text)}</text>"
        for py, text in y_ticks
    )
    middle = (top + base) / 2
    return (
        f"<path d='{grid}' stroke='#eee'/>"
        f"<path d='M{left} {top}V{base}H{end}{marks}' stroke='#999' fill='none'/>"
        f"<g class='x-ticks' text-anchor='middle' font-size='10'>{x_labels}</g>"
        f"<g class='y-ticks' text-anchor='end' font-size='10'>{y_labels}</g>"
        f"<text x='{(left + end) / 2:.0f}' y='{height - 6}' text-anchor='middle' font-size='10'>"
        f"{html.escape(x_title)}</text><text x='12' y='{middle:.0f}' text-anchor='middle' "
        f"font-size='10' transform='rotate(-90 12 {middle:.0f})'>{html.escape(y_title)}</text>"
    )


def _window_axes(
    windows: list[dict[str, T.Any]],
    span: list[float],
    size: tuple[int, int, tuple[int, int, int, int]],
    most: int,
    y_title: str,
) -> tuple[Scale, Scale, str]:
    """The frame of a chart over windows (a metric, the residuals): a slot per window along x,
    at most ``most`` of them labelled by their start, and round y ticks covering ``span``."""
    width, height, margins = size
    left, right, top, bottom = margins
    ticks = nice_ticks(min(span), max(span))
    x = Scale(-0.5, len(windows) - 0.5, left, width - right)
    y = Scale(ticks[0], ticks[-1], height - bottom, top)
    frame = _frame(
        width,
        height,
        margins,
        _window_ticks(windows, x, most),
        _placed(y, ticks),
        "window start",
        y_title,
    )
    return x, y, frame


def _window_ticks(windows: list[dict[str, T.Any]], x: Scale, most: int) -> list[tuple[float, str]]:
    step = max(1, math.ceil(len(windows) / most))
    return [(x(i), _label(windows[i])) for i in range(0, len(windows), step)]


def _polyline(
    points: list[tuple[float, float]], colour: str, stroke: float, title: str = ""
) -> str:
    if len(points) < 2:
        return ""
    tip = f"<title>{html.escape(title)}</title>" if title else ""
    coordinates = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    return f"<polyline points='{coordinates}' fill='none' stroke='{colour}' stroke-width='{stroke}'>{tip}</polyline>"


def _hline(
    x: Scale,
    y: Scale,
    value: float,
    count: int,
    colour: str,
    dash: str,
    text: str,
    right: bool = True,
) -> str:
    """A dashed horizontal line across the windows, labelled at its right (or left) end."""
    py = y(value)
    at = f"x='{x(count - 0.5) - 3:.1f}' text-anchor='end'" if right else f"x='{x(-0.5) + 3:.1f}'"
    label = (
        f"<text {at} y='{py - 3:.1f}' font-size='10' fill='{colour}'>{html.escape(text)}</text>"
        if text
        else ""
    )
    return (
        f"<line x1='{x(-0.5):.1f}' x2='{x(count - 0.5):.1f}' y1='{py:.1f}' y2='{py:.1f}' "
        f"stroke='{colour}' stroke-dasharray='{dash}'><title>{html.escape(text)}</title></line>{label}"
    )


def _per_window(windows: list[dict[str, T.Any]], view: str, blocks: dict[int, str]) -> str:
    """One block per window, shown and hidden by the report's window picker like its drift
    tables (class ``per-window``): the latest shown, the others pre-rendered and hidden until
    chosen (a few kilobytes each, and the page works without script); a window without
    labelled rows says so."""
    latest = len(windows) - 1
    return "".join(
        f"<div class='per-window perf-window' data-view='{view}' data-window='{i}'"
        f"{'' if i == latest else ' hidden'}>"
        + (
            blocks.get(i)
            or f"<p class='perf-summary'>{html.escape(_period(w))}: no labelled rows.</p>"
        )
        + "</div>"
        for i, w in enumerate(windows)
    )


def _legend_entry(px: float, py: float, colour: str, text: str) -> str:
    return (
        f"<rect x='{px:.0f}' y='{py - 8:.0f}' width='14' height='3' fill='{colour}'/>"
        f"<text x='{px + 18:.0f}' y='{py - 3:.0f}' font-size='10'>{html.escape(text)}</text>"
    )


def _legend(entries: list[tuple[str, str, str]]) -> str:
    """An HTML legend: ``(shape, colour, text)`` with shape marker, line, dash, dot or box."""
    shapes = {
        "marker": "border-radius:50%;width:.7rem",
        "line": "height:2px",
        "dash": "height:0;border-top:2px dashed {c};background:none",
        "dot": "height:0;border-top:2px dotted {c};background:none",
        "box": "border:1px solid #0072B2",
    }
    return (
        "<p class='perf-legend'>"
        + "".join(
            f"<span style='background:{colour};{shapes[shape].format(c=colour)}'></span>{html.escape(text)}"
            for shape, colour, text in entries
        )
        + "</p>"
    )
