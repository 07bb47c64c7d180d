# ruff: noqa: E501 - HTML fragments read best on one line each
"""A self-contained HTML monitoring report: summary, distributions, drift, quality, performance.

Charts are inline SVG (``bikes.io.charts``) of *binned* data, so the file stays small at any
row count, opens offline, and needs no JavaScript library.
"""

from __future__ import annotations

import html
import typing as T

import numpy as np

from bikes.core.monitoring import HIGHER_IS_BETTER, STATUSES
from bikes.io import charts

if T.TYPE_CHECKING:
    from bikes.core.drift import Detector

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
h1{margin-bottom:.2rem}.status{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;color:#fff}
.no_detection{background:#2e7d32}.potential{background:#ef6c00}.detected{background:#c62828}.no_data{background:#6a1b9a}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}.drift{color:#c62828;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:.5rem}
svg{width:100%;height:auto;font-family:inherit}svg .drift{fill:#c62828;font-weight:600}
.legend span{display:inline-block;width:1.5rem;height:.7rem;margin:0 .3rem 0 1rem}
"""


def distributions_chart(panels: list[tuple[str, Detector, np.ndarray, bool]]) -> str:
    """Reference and current shares per reference bin (numeric) or category, one small
    chart per column. The shares come binned from scoring, so drawing costs the same at any
    row count."""
    charts_html = []
    for title, detector, current_shares, drift in panels:
        numeric = detector.kind == "numeric"
        charts_html.append(
            charts.histogram_svg(
                charts.Histogram(
                    title=title,
                    reference=detector.reference_shares,
                    current=current_shares,
                    edges=detector.edges if numeric else None,
                    labels=() if numeric else (*(_label(c) for c in detector.categories), "unseen"),
                    drift=drift,
                )
            )
        )
    return charts.legend_html() + f"<div class='grid'>{''.join(charts_html)}</div>"


def performance_chart(windows: list[dict[str, T.Any]]) -> str | None:
    """The watched metric per window against the reference's, where both are known."""
    points = []
    for w in windows:
        performance = w.get("performance") or {}
        metric = performance.get("metric")
        now, before = performance.get("current") or {}, performance.get("reference") or {}
        if metric in now and metric in before:
            points.append((str(w["window"]["start"])[:10], metric, now[metric], before[metric]))
    if not points:
        return None
    metric = points[-1][1]
    better = "higher" if metric in HIGHER_IS_BETTER else "lower"
    return charts.line_svg(
        f"{metric} per window against the reference",
        [p[0] for p in points],
        [p[2] for p in points],
        points[0][3],
        f"{metric} ({better} is better)",
    )


def render(
    windows: list[dict[str, T.Any]],
    detectors: dict[str, Detector],
    latest_shares: dict[str, np.ndarray],
    title: str = "bikes monitoring",
) -> str:
    """The whole report as one HTML string; distributions are for the latest window."""
    last = windows[-1]
    status = max((w["status"] for w in windows), key=STATUSES.index)
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Overall status <span class='status {status}' id='status'>{status}</span> over "
        f"{len(windows)} window(s); latest window {html.escape(str(last['window']['start']))} .. "
        f"{html.escape(str(last['window']['end']))}, {last['window']['rows']} rows, "
        f"{last['data_quality']['rejected_rows']} rejected, "
        f"{last['data_drift']['drifted_columns']} drifted column(s) "
        f"(share {last['data_drift']['drift_share']:.2f}{_counted(last)}).</p>",
        _expected_drift(last),
        _missing_columns(last),
        _windows_table(windows),
    ]
    chart = performance_chart(windows)
    reference = _reference_performance(windows)
    if chart or reference:
        parts += ["<h2>Performance over time</h2>", reference, chart or ""]
    parts += ["<h2>Drift, latest window</h2>", _drift_table(last)]
    panels = []
    verdicts = _drift_entries(last)
    for column, detector in detectors.items():
        if column not in latest_shares or not latest_shares[column].size:
            continue
        verdict = verdicts.get(column, {})
        score = verdict.get("score")
        scored = "" if score is None else f" {score:.3g}"
        expected = bool(verdict.get("expected"))
        limit = "expected" if expected else f"threshold {detector.threshold:g}"
        panels.append(
            (
                f"{column}: {detector.method}{scored} ({limit})",
                detector,
                latest_shares[column],
                bool(verdict.get("drift")) and not expected,
            )
        )
    if panels:
        parts += [
            "<h2>Distributions, latest window against the reference</h2>",
            distributions_chart(panels),
        ]
    parts += ["<h2>Data quality, latest window</h2>", _quality_table(last)]
    parts.append("<script>document.body.dataset.ready = 'yes';</script></body></html>")
    return "".join(parts)


def _windows_table(windows: list[dict[str, T.Any]]) -> str:
    rows = []
    for w in windows:
        performance = w.get("performance") or {}
        metric = performance.get("metric")
        figure = (performance.get("current") or {}).get(metric)
        change = performance.get("relative_change")
        rows.append(
            f"<tr><td>{html.escape(str(w['window']['start']))}</td><td>{w['window']['rows']}</td>"
            f"<td>{w['data_quality']['rejected_rows']}</td>"
            f"<td class='{w['status']}'>{w['status']}</td><td>{w['data_drift']['drift_share']:.2f}</td>"
            f"<td>{html.escape(metric or '')}</td><td>{_number(figure)}</td><td>{'' if change is None else f'{change:+.0%}'}</td>"
            f"<td>{performance.get('label_coverage', float('nan')):.0%}</td></tr>"
        )
    head = "<tr><th>window</th><th>rows</th><th>rejected</th><th>status</th><th>drift share</th><th>metric</th><th>value</th><th>vs reference</th><th>labelled</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _counted(window: dict[str, T.Any]) -> str:
    """How the share was counted, when the contract expects some columns to drift."""
    drift = window["data_drift"]
    if not drift.get("expected_columns"):
        return ""
    return f" of {drift['counted_columns']} counted column(s)"


def _expected_drift(window: dict[str, T.Any]) -> str:
    drift = window["data_drift"]
    expected = drift.get("expected_columns") or []
    if not expected:
        return ""
    drifted = drift.get("expected_drifted_columns") or []
    names = ", ".join(html.escape(str(c)) for c in expected)
    moved = ", ".join(html.escape(str(c)) for c in drifted) or "none"
    return (
        f"<p id='expected-drift'>Drift expected by the contract in {names}: scored and shown, "
        f"marked <em>expected</em>, not counted in the drift share or the status (drifting "
        f"in the latest window: {moved}).</p>"
    )


def _reference_performance(windows: list[dict[str, T.Any]]) -> str:
    """Which rows the reference performance came from: held out, or in-sample (optimistic)."""
    performance = next(
        (w["performance"] for w in windows if (w.get("performance") or {}).get("reference_source")),
        None,
    )
    if performance is None:
        return ""
    source, metric = performance["reference_source"], performance["metric"]
    figure = (performance.get("reference") or {}).get(metric)
    said = str(source["source"])  # training's and the gate's sources name rows, or period
    count = None if source.get("rows") is None else f"{source['rows']:,} rows"
    rows = "" if count is None or count in said else f", {count}"
    start, end = str(source.get("start") or "")[:10], str(source.get("end") or "")[:10]
    period = f", {start} .. {end}" if start and end and start not in said else ""
    text = (
        f"Reference performance ({html.escape(source['kind'].replace('_', '-'))}): {html.escape(str(metric))} "
        f"{_number(figure)} from {html.escape(source['source'])}{rows}{period}: {html.escape(source['note'])}."
    )
    in_sample = (performance.get("reference_in_sample") or {}).get(metric)
    if source["kind"] == "held_out" and in_sample is not None:
        text += f" The model's in-sample fit ({_number(in_sample)}) is not used: it has seen those labels."
    if source.get("segments") and source["segments"] != source["kind"]:
        text += f" Per-segment reference figures: {html.escape(source['segments'].replace('_', '-'))} rows."
    css = " class='drift'" if source.get("optimistic") else ""
    return f"<p id='reference-performance'{css}>{text}</p>"


def _missing_columns(window: dict[str, T.Any]) -> str:
    missing = window["data_quality"]["missing_columns"]
    if not missing:
        return ""
    names = ", ".join(html.escape(str(c)) for c in missing)
    return f"<p class='drift' id='missing-columns'>Missing from the latest window: {names}.</p>"


def _drift_entries(window: dict[str, T.Any]) -> dict[str, dict[str, T.Any]]:
    """Every drift verdict of a window by column: features, prediction and target."""
    entries = dict(window["data_drift"]["columns"])
    for key in ("prediction_drift", "target_drift"):
        if window.get(key):
            entries[window[key]["column"]] = window[key]
    entries.update(window.get("score_drift") or {})
    return entries


def _drift_table(window: dict[str, T.Any]) -> str:
    entries = _drift_entries(window)
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{r['method']}</td>"
        f"<td class='{'drift' if r['drift'] and not r.get('expected') else ''}'>{_number(r['score'])}</td>"
        f"<td>{r['threshold']:g}</td><td>{_verdict(r)}</td></tr>"
        for c, r in entries.items()
    )
    return f"<table><tr><th>column</th><th>method</th><th>score</th><th>threshold</th><th>verdict</th></tr>{rows}</table>"


def _verdict(entry: dict[str, T.Any]) -> str:
    """drift, ok, or for a column the contract expects to drift: "drift (expected)"."""
    if not entry["drift"]:
        return "ok (expected)" if entry.get("expected") else "ok"
    return "drift (expected, not counted)" if entry.get("expected") else "drift"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _label(category: T.Any) -> str:
    """A category as a chart label: numbers compact (3, not 3.0), anything else as text."""
    if isinstance(category, float | np.floating):
        return f"{category:g}"
    return str(category)


def _quality_table(window: dict[str, T.Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(c))}{' (missing column)' if q.get('missing_column') else ''}</td>"
        f"<td>{q['missing_share']:.2%}</td><td>{q['out_of_range_share']:.2%}</td>"
        f"<td>{html.escape(', '.join(map(str, q['unseen_categories'])))}</td></tr>"
        for c, q in window["data_quality"]["columns"].items()
    )
    quality = window["data_quality"]
    share = quality["rejected_share"]
    note = (
        f"<p>{quality['rejected_rows']} row(s) rejected by the service"
        + ("" if share is None else f" ({share:.2%} of the rows received)")
        + "; the shares below count accepted and rejected rows together.</p>"
    )
    return f"{note}<table><tr><th>column</th><th>missing</th><th>out of range</th><th>unseen categories</th></tr>{rows}</table>"
