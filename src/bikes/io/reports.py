# ruff: noqa: E501 - HTML fragments read best on one line each
"""A self-contained HTML monitoring report: summary, distributions, drift, quality, performance.

Charts are matplotlib figures embedded as base64 PNGs of *binned* data, so the file stays a
few hundred kilobytes at any row count, opens offline, and needs no JavaScript library.
"""

from __future__ import annotations

import base64
import html
import io
import typing as T

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bikes.core.drift import Detector

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
h1{margin-bottom:.2rem}.status{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;color:#fff}
.no_detection{background:#2e7d32}.potential{background:#ef6c00}.detected{background:#c62828}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}.drift{color:#c62828;font-weight:600}
img{max-width:100%}
"""


def _png(figure: T.Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)  # no bbox_inches="tight": it draws twice
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def distributions_chart(panels: list[tuple[str, Detector, np.ndarray]]) -> str:
    """Reference and current shares per reference bin (numeric) or category, overlaid, one
    panel per column, all in one figure: one render instead of one per column."""
    columns = 3
    rows = (len(panels) + columns - 1) // columns
    figure, grid = plt.subplots(rows, columns, figsize=(13, 2.5 * rows), squeeze=False)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.04, top=0.97, hspace=0.55, wspace=0.2)
    for axes in grid.flat[len(panels) :]:
        axes.set_visible(False)
    for axes, (title, detector, current) in zip(grid.flat, panels, strict=False):
        reference_shares = detector.reference_frequencies
        current_shares = detector.frequencies(current[np.isfinite(current)])
        if detector.kind == "numeric":
            centers = (detector.edges[:-1] + detector.edges[1:]) / 2
            widths = np.diff(detector.edges)
            axes.bar(centers, reference_shares, width=widths, alpha=0.5, label="reference")
            axes.bar(centers, current_shares, width=widths, alpha=0.5, label="current")
        else:
            labels = [f"{c:g}" for c in detector.categories] + ["unseen"]
            positions = np.arange(len(labels))
            axes.bar(positions - 0.2, reference_shares, width=0.4, label="reference")
            axes.bar(positions + 0.2, current_shares, width=0.4, label="current")
            axes.set_xticks(positions, labels, fontsize=7)
        axes.set_title(title, fontsize=9)
        axes.tick_params(labelsize=7)
    grid.flat[0].legend(fontsize=7)
    return _png(figure)


def performance_chart(windows: list[dict[str, T.Any]]) -> str | None:
    points = [
        (
            w["window"]["start"],
            w["performance"]["current"]["rmse"],
            w["performance"]["reference"]["rmse"],
        )
        for w in windows
        if (w.get("performance") or {}).get("current") and w["performance"].get("reference")
    ]
    if not points:
        return None
    figure, axes = plt.subplots(figsize=(9, 2.6))
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.96)
    starts = pd.to_datetime([p[0] for p in points])
    axes.plot(starts, [p[1] for p in points], marker="o", label="RMSE, current")
    axes.axhline(points[0][2], color="grey", linestyle="--", label="RMSE, reference")
    axes.legend(fontsize=8)
    axes.set_ylabel("bikes per hour")
    return _png(figure)


def render(
    windows: list[dict[str, T.Any]],
    detectors: dict[str, Detector],
    latest: pd.DataFrame,
    title: str = "bikes monitoring",
) -> str:
    """The whole report as one HTML string; distributions are for the latest window."""
    last = windows[-1]
    status = max(
        (w["status"] for w in windows), key=("no_detection", "potential", "detected").index
    )
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Overall status <span class='status {status}' id='status'>{status}</span> over "
        f"{len(windows)} window(s); latest window {html.escape(str(last['window']['start']))} .. "
        f"{html.escape(str(last['window']['end']))}, {last['window']['rows']} rows, "
        f"{last['data_drift']['drifted_columns']} drifted column(s) "
        f"(share {last['data_drift']['drift_share']:.2f}).</p>",
        _windows_table(windows),
    ]
    chart = performance_chart(windows)
    if chart:
        parts += ["<h2>Performance over time</h2>", f"<img alt='RMSE per window' src='{chart}'>"]
    parts += ["<h2>Drift, latest window</h2>", _drift_table(last)]
    panels = []
    for column, detector in detectors.items():
        if column not in latest.columns:
            continue
        values = pd.to_numeric(latest[column], errors="coerce").to_numpy(dtype=float)
        drift = last["data_drift"]["columns"].get(column) or {}
        score = drift.get("score")
        scored = "" if score is None else f" {score:.3g}"
        panels.append(
            (
                f"{column}: {detector.method}{scored} (threshold {detector.threshold:g})",
                detector,
                values,
            )
        )
    if panels:
        parts += [
            "<h2>Distributions, latest window against the reference</h2>",
            f"<img alt='reference and current distributions of {len(panels)} columns' src='{distributions_chart(panels)}'>",
        ]
    parts += ["<h2>Data quality, latest window</h2>", _quality_table(last)]
    parts.append("<script>document.body.dataset.ready = 'yes';</script></body></html>")
    return "".join(parts)


def _windows_table(windows: list[dict[str, T.Any]]) -> str:
    rows = []
    for w in windows:
        performance = w.get("performance") or {}
        rmse = (performance.get("current") or {}).get("rmse")
        change = performance.get("rmse_relative_change")
        rows.append(
            f"<tr><td>{html.escape(str(w['window']['start']))}</td><td>{w['window']['rows']}</td>"
            f"<td class='{w['status']}'>{w['status']}</td><td>{w['data_drift']['drift_share']:.2f}</td>"
            f"<td>{'' if rmse is None else f'{rmse:.1f}'}</td><td>{'' if change is None else f'{change:+.0%}'}</td>"
            f"<td>{performance.get('label_coverage', float('nan')):.0%}</td></tr>"
        )
    head = "<tr><th>window</th><th>rows</th><th>status</th><th>drift share</th><th>RMSE</th><th>RMSE vs reference</th><th>labelled</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _drift_table(window: dict[str, T.Any]) -> str:
    entries = dict(window["data_drift"]["columns"])
    for key in ("prediction_drift", "target_drift"):
        if window.get(key):
            entries[window[key]["column"]] = window[key]
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{r['method']}</td>"
        f"<td class='{'drift' if r['drift'] else ''}'>{_number(r['score'])}</td>"
        f"<td>{r['threshold']:g}</td><td>{'drift' if r['drift'] else 'ok'}</td></tr>"
        for c, r in entries.items()
    )
    return f"<table><tr><th>column</th><th>method</th><th>score</th><th>threshold</th><th>verdict</th></tr>{rows}</table>"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _quality_table(window: dict[str, T.Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{q['missing_share']:.2%}</td><td>{q['out_of_range_share']:.2%}</td>"
        f"<td>{html.escape(', '.join(map(str, q['unseen_categories'])))}</td></tr>"
        for c, q in window["data_quality"]["columns"].items()
    )
    return f"<table><tr><th>column</th><th>missing</th><th>out of range</th><th>unseen categories</th></tr>{rows}</table>"
