# ruff: noqa: E501 - HTML fragments read best on one line each
"""A self-contained HTML monitoring report: what was compared, what a finding's retraining
did, drift over time, performance, service, and every window's diagnostics, drift and
distributions one choice away.

Charts are inline SVG (``bikes.io.charts``) of *binned* data, so the file stays small at any
row count and opens offline with no JavaScript library. One window picker, above the
performance views, drives everything shown per window: small views (drift and data quality
tables, the performance diagnostics of ``report_performance``) are pre-rendered per window
in ``per-window`` blocks and toggled; the distributions are drawn once per column, on one y
scale for every window, and a few lines of inline script redraw their current line from each
window's binned shares (a few hundred numbers per window, embedded as JSON). The 27-window
weekly backfill is about 420 kB. Without script the page shows the latest window.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import typing as T

import numpy as np

from bikes.core.drift import TESTS
from bikes.core.monitoring import STATUSES
from bikes.io import charts, report_performance
from bikes.io.charts import number, percent, period_label

if T.TYPE_CHECKING:
    from bikes.core.contract import Contract
    from bikes.core.drift import Detector

HTML_FACTS = frozenset({"Reference (performance)", "Contract"})  # header rows already HTML

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
h1{margin-bottom:.2rem}.status{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;color:#fff}
.no_detection{background:#2e7d32}.potential{background:#ef6c00}.detected{background:#c62828}.no_data{background:#6a1b9a}
td.no_detection,td.potential,td.detected,td.no_data{color:#fff}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}.drift{color:#c62828;font-weight:600}
table.facts th{text-align:left;vertical-align:top;width:14rem}table.facts td{text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:.5rem}
svg{width:100%;height:auto;font-family:inherit}svg .drift{fill:#c62828;font-weight:600}
.legend span{display:inline-block;width:1.5rem;height:.7rem;margin:0 .3rem 0 1rem}
table.heatmap{font-size:.8rem}table.heatmap td,table.heatmap th{padding:.2rem .35rem}
table.heatmap td.hit{font-weight:700;outline:2px solid #222;outline-offset:-2px}table.heatmap .exp{font-style:italic}
table.heatmap th.exp{background:repeating-linear-gradient(45deg,#f5f5f5,#f5f5f5 4px,#e6e6e6 4px,#e6e6e6 8px)}
.ratio-legend span{display:inline-block;padding:0 .4rem;margin-left:.2rem;font-size:.8rem}.ratio-legend .na{background:#d9d9d9}
.picker{position:sticky;top:0;background:#fff;padding:.5rem 0;border-bottom:1px solid #ddd;z-index:1}
.picker select{font-size:1rem;padding:.2rem}.note{color:#555;font-size:.9rem}
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1rem}
table.drift-table td:nth-child(2),table.drift-table td:nth-child(5),table.drift-table th{text-align:left}
table.facts p{margin:0}
"""

SCRIPT = """(function(){
var data=JSON.parse(document.getElementById('report-data').textContent);
var select=document.getElementById('window');
function points(g,s){var p=[[g.x[0],g.base]];for(var i=0;i<s.length;i++){var y=g.base-s[i]*g.k[i];p.push([g.x[i],y],[g.x[i+1],y]);}
p.push([g.x[g.x.length-1],g.base]);return p.map(function(q){return q[0].toFixed(1)+','+q[1].toFixed(1);}).join(' ');}
function show(i){var w=data.windows[i];
document.querySelectorAll('.per-window').forEach(function(e){e.hidden=e.dataset.window!==String(i);});
document.querySelectorAll('.window-name').forEach(function(e){e.textContent=w.label;});
document.querySelectorAll('svg[data-column]').forEach(function(svg){var c=svg.dataset.column,e=w.columns[c];
var line=svg.querySelector('polyline.current'),title=svg.querySelector('text');
if(!e){line.setAttribute('points','');title.textContent=c+': no values in this window';title.removeAttribute('class');return;}
line.setAttribute('points',points(data.columns[c],e[2]));title.textContent=e[0];
if(e[1]){title.setAttribute('class','drift');}else{title.removeAttribute('class');}svg.setAttribute('aria-label',e[0]);
svg.querySelectorAll('rect title').forEach(function(t,j){t.textContent=t.textContent.replace(/current [^,]*$/,'current '+(e[2][j]*100).toFixed(1)+'%');});});
document.querySelectorAll('g.box').forEach(function(g){g.classList.toggle('chosen',g.dataset.window===String(i));});
select.value=String(i);document.body.dataset.window=String(i);}
select.addEventListener('change',function(){show(Number(select.value));});
document.querySelectorAll('a[data-goto]').forEach(function(a){a.addEventListener('click',function(){show(Number(a.dataset.goto));});});
show(Number(select.value));document.body.dataset.ready='yes';})();"""


@dataclasses.dataclass(frozen=True)
class Compared:
    """What the windows were compared with, for the report's header: the reference table
    (for people: "the reference data of models:/bikes/3"), its rows and event-time period,
    and the contract with where it came from."""

    reference: str = "the reference table"
    reference_rows: int | None = None
    reference_period: tuple[str | None, str | None] = (None, None)
    contract: Contract | None = None
    contract_source: str = ""


def render(
    windows: list[dict[str, T.Any]],
    detectors: dict[str, Detector],
    shares: list[dict[str, np.ndarray]] | dict[str, np.ndarray],
    title: str = "bikes monitoring",
    compared: Compared | None = None,
    retraining: dict[str, T.Any] | None = None,
) -> str:
    """The whole report as one HTML string. ``shares``: each window's binned current shares
    (``Monitor.window_shares``), or the latest window's alone; ``retraining``: what a finding
    started (the outcome of ``jobs.retraining.retrain_on_finding``), if anything."""
    if isinstance(shares, dict):
        shares = [{} for _ in windows[:-1]] + [shares]
    compared = compared or Compared()
    last = windows[-1]
    status = max((w["status"] for w in windows), key=STATUSES.index)
    first = windows[0]["window"]
    style = STYLE + report_performance.PERFORMANCE_STYLE
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{style}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Overall status <span class='status {status}' id='status'>{status}</span> over "
        f"{len(windows)} window(s), {html.escape(period_label(first['start'], last['window']['end']))}; "
        f"latest window {html.escape(period_label(last['window']['start'], last['window']['end']))}: "
        f"{last['window']['rows']:,} rows, {last['data_quality']['rejected_rows']:,} rejected, "
        f"{last['data_drift']['drifted_columns']} drifted column(s) "
        f"(share {percent(last['data_drift']['drift_share'])}{_counted(last)}).</p>",
        _retraining(retraining),
        _header(windows, detectors, compared),
        _expected_drift(last),
        _missing_columns(last),
        "<h2 id='drift-over-time'>Drift over time</h2>",
        _heatmap(windows, detectors),
    ]
    parts.append(_picker(windows))
    parts.append(_performance(windows, compared))
    parts.append(_service(windows))
    parts += _window_detail(windows, detectors, shares)
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "".join(parts)


# -- the header -------------------------------------------------------------------------------
def _header(
    windows: list[dict[str, T.Any]], detectors: dict[str, Detector], compared: Compared
) -> str:
    """Model, reference, current, contract, methods and thresholds: what was compared."""
    last = windows[-1]
    model = str(last.get("model_name") or "")
    versions = sorted(
        {str(w.get("model_version")) for w in windows if w.get("model_version") is not None}
    )
    served = f", version {', '.join(versions)} in the current rows" if versions else ""
    rows = [("Model", f"{model or 'unnamed'}{served}")]
    start, end = compared.reference_period
    reference = compared.reference
    if compared.reference_rows is not None:
        reference += f": {compared.reference_rows:,} rows"
    if start and end:
        reference += (
            f", events from {charts.date_label(start[:10])} to {charts.date_label(end[:10])}"
        )
    rows.append(("Reference (drift)", reference))
    performance = _reference_performance(windows)
    if performance:
        rows.append(("Reference (performance)", performance))
    counts = [w["window"]["rows"] for w in windows]
    rejected = sum(w["data_quality"]["rejected_rows"] for w in windows)
    per_window = (
        f"{min(counts):,} to {max(counts):,} per window" if len(counts) > 1 else "one window"
    )
    rows.append(
        (
            "Current",
            f"{len(windows)} window(s), {period_label(windows[0]['window']['start'], last['window']['end'])}: "
            f"{sum(counts):,} rows ({per_window}), {rejected:,} rejected by the service",
        )
    )
    if compared.contract is not None:
        rows.append(("Contract", _contract(compared.contract, compared.contract_source)))
    rows.append(("Drift methods", _methods(detectors)))
    drift = last["data_drift"]
    rows.append(
        (
            "Thresholds",
            f"dataset drift when at least {_setting(drift['share_threshold'])} of the counted columns drift"
            + _performance_threshold(windows),
        )
    )
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{v if k in HTML_FACTS else html.escape(v)}</td></tr>"
        for k, v in rows
    )
    return f"<section id='compared'><h2>What was compared</h2><table class='facts'>{body}</table></section>"


def _retraining(outcome: dict[str, T.Any] | None) -> str:
    """What the finding started: the new version, the gate's verdict, promoted or not, and the
    runs to open in MLflow. Nothing when no window was detected (or retraining is off)."""
    if not outcome or outcome.get("status") in (None, "no_finding"):
        return ""
    status = str(outcome["status"])
    if status == "cooldown":
        said = (
            f"A finding, but no retraining: one started at "
            f"{charts.date_label(outcome.get('last_trigger'))} and the cooldown "
            f"({outcome.get('cooldown')}) has not passed."
        )
        return f"<section id='retraining'><h2>Retraining</h2><p>{html.escape(said)}</p></section>"
    version = outcome.get("model_version")
    new = f"version {version}" if version is not None else "no new version"
    said = {
        "promoted": f"{new} passed the gate and was promoted",
        "passed": f"{new} passed the gate, not promoted",
        "blocked": f"{new} was blocked by the gate: the champion stays",
        "conflict": f"{new} passed the gate, its promotion conflicted: the champion stays",
    }.get(status, f"the retraining {status}: {new}")
    rows = [
        (
            "Outcome",
            f"A detected window started a retraining of {outcome.get('model_name') or 'the model'}: {said}.",
        )
    ]
    rows.append(("Gate verdict", str(outcome.get("verdict") or "none")))
    if outcome.get("champion_version") is not None:
        rows.append(("Champion", f"version {outcome['champion_version']}"))
    trained = outcome.get("window") or {}
    counts = outcome.get("rows") or {}
    if counts:
        original = counts.get("training_data") or 0
        rows.append(
            (
                "Trained on",
                f"{counts.get('total', 0):,} rows ({counts.get('store', 0):,} labelled store rows "
                f"of {period_label(trained.get('start'), trained.get('end'))}"
                + (f", {original:,} of the training data)" if original else ")"),
            )
        )
    holdout = outcome.get("holdout") or {}
    if holdout.get("rows") is not None:
        rows.append(
            (
                "Gated on",
                f"{outcome.get('gate_rows', holdout['rows']):,} rows ({holdout['rows']:,} held out, "
                f"{period_label(holdout.get('start'), holdout.get('end'))})",
            )
        )
    if outcome.get("reason"):
        rows.append(("Why", str(outcome["reason"])))
    runs = [
        f"{name} {outcome[key]}"
        for name, key in (
            ("retraining", "run_id"),
            ("training", "training_run_id"),
            ("gate", "evaluations_run_id"),
        )
        if outcome.get(key)
    ]
    if runs:
        rows.append(("MLflow runs", ", ".join(runs)))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return (
        f"<section id='retraining' data-status='{html.escape(status)}'><h2>Retraining</h2>"
        f"<table class='facts'>{body}</table></section>"
    )


def _setting(share: float) -> str:
    """A configured share as written: 50%, 12.5% (not rounded to the figures of a measure)."""
    return f"{share * 100:g}%"


def _contract(contract: Contract, source: str) -> str:
    """The contract in one line, its column names as code."""

    def names(columns: T.Iterable[T.Any]) -> str:
        return ", ".join(f"<code>{html.escape(str(c))}</code>" for c in columns)

    features = contract.feature_names
    said = [
        html.escape(contract.task),
        f"target {names([contract.target]) if contract.target else 'none'}",
        f"prediction {names([contract.prediction])}",
    ]
    if contract.timestamp:
        said.append(f"event time {names([contract.timestamp])}")
    said.append(
        f"{len(features)} feature(s): {names(features)}" if features else "features from the data"
    )
    if contract.segments:
        said.append(f"segments {names(contract.segments)}")
    if contract.expected_drift:
        said.append(f"drift expected in {names(contract.expected_drift)}")
    return "; ".join(said) + (f" ({html.escape(source)})" if source else "")


def _methods(detectors: dict[str, Detector]) -> str:
    """The columns grouped by method and threshold, with the direction of the decision."""
    groups: dict[tuple[str, float], list[str]] = {}
    for column, detector in detectors.items():
        groups.setdefault((detector.method, detector.threshold), []).append(column)
    return "; ".join(
        f"{method} ({'p-value below' if method in TESTS else 'score at or above'} {threshold:g}): {', '.join(columns)}"
        for (method, threshold), columns in groups.items()
    )


def _performance_threshold(windows: list[dict[str, T.Any]]) -> str:
    performance = next((w["performance"] for w in windows if w.get("performance")), None)
    if not performance or performance.get("threshold") is None:
        return ""
    return (
        f"; performance degraded when {performance['metric']} is {_setting(performance['threshold'])} "
        f"{'lower' if performance.get('higher_is_better') else 'higher'} than the reference's"
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
    period = f", {period_label(start, end)}" if start and end and start not in said else ""
    text = (
        f"Reference performance ({html.escape(source['kind'].replace('_', '-'))}): {html.escape(str(metric))} "
        f"{number(figure)} from {html.escape(source['source'])}{rows}{period}: {html.escape(source['note'])}."
    )
    in_sample = (performance.get("reference_in_sample") or {}).get(metric)
    if source["kind"] == "held_out" and in_sample is not None:
        text += f" The model's in-sample fit ({number(in_sample)}) is not used: it has seen those labels."
    if source.get("segments") and source["segments"] != source["kind"]:
        text += f" Per-segment reference figures: {html.escape(source['segments'].replace('_', '-'))} rows."
    css = " class='drift'" if source.get("optimistic") else ""
    return f"<p id='reference-performance'{css}>{text}</p>"


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


def _missing_columns(window: dict[str, T.Any], latest: bool = True) -> str:
    missing = window["data_quality"]["missing_columns"]
    if not missing:
        return ""
    names = ", ".join(html.escape(str(c)) for c in missing)
    ident = " id='missing-columns'" if latest else ""
    return f"<p class='drift'{ident}>Missing from {'the latest' if latest else 'this'} window: {names}.</p>"


# -- drift over time ------------------------------------------------------------------------
def _drift_entries(window: dict[str, T.Any]) -> dict[str, dict[str, T.Any]]:
    """Every drift verdict of a window by column: features, prediction and target."""
    entries = dict(window["data_drift"]["columns"])
    for key in ("prediction_drift", "target_drift"):
        if window.get(key):
            entries[window[key]["column"]] = window[key]
    entries.update(window.get("score_drift") or {})
    return entries


def strength(entry: dict[str, T.Any]) -> float | None:
    """How far a verdict is past its threshold, 1 at the threshold: score / threshold for a
    distance, threshold / p for a test (a p-value drifts *below* its threshold)."""
    score, threshold = entry.get("score"), entry.get("threshold")
    if score is None or threshold is None or not math.isfinite(score) or threshold <= 0:
        return None
    score, threshold = float(score), float(threshold)
    if entry.get("method") in TESTS:
        return math.inf if score == 0 else threshold / score
    return score / threshold


def _heatmap(windows: list[dict[str, T.Any]], detectors: dict[str, Detector]) -> str:
    """Windows down, columns across, each cell coloured by score against threshold; a click
    on a window opens its own drift table and distributions."""
    entries = [_drift_entries(w) for w in windows]
    seen = {c for e in entries for c in e}
    columns = [c for c in detectors if c in seen] + sorted(seen - set(detectors))
    last = windows[-1]
    outputs = {
        (last.get("prediction_drift") or {}).get("column"): "prediction",
        (last.get("target_drift") or {}).get("column"): "target",
    }
    expected = set(last["data_drift"].get("expected_columns") or [])
    heads = "".join(
        f"<th class='{'exp' if c in expected else ''}' title='{html.escape(c)}"
        f"{': drift expected by the contract, not counted' if c in expected else ''}"
        f"{f' ({outputs[c]})' if c in outputs else ''}'>{html.escape(c)}{'*' if c in expected else ''}</th>"
        for c in columns
    )
    rows = []
    for index, (window, verdicts) in enumerate(zip(windows, entries, strict=True)):
        label = period_label(window["window"]["start"], window["window"]["end"])
        short = charts.date_label(window["window"]["start"]) or label
        cells = []
        for column in columns:
            entry = verdicts.get(column)
            if entry is None:
                cells.append(
                    "<td style='background:#d9d9d9' title='not scored in this window'>&ndash;</td>"
                )
                continue
            ratio = strength(entry)
            background, ink = charts.ratio_colour(ratio)
            css = " ".join(
                c
                for c, on in (
                    ("hit", entry.get("drift") and not entry.get("expected")),
                    ("exp", entry.get("expected")),
                )
                if on
            )
            tip = (
                f"{column}, {label}: {entry['method']} {number(entry.get('score'))}, threshold {entry['threshold']:g}"
                + ("" if ratio is None else f" ({number(ratio, 2)} times the threshold)")
                + f": {_verdict(entry)}"
            )
            cells.append(
                f"<td class='{css}' style='background:{background};color:{ink}' title='{html.escape(tip)}'>"
                f"{'&ndash;' if ratio is None else ('∞' if math.isinf(ratio) else number(ratio, 2))}</td>"
            )
        drift = window["data_drift"]
        rows.append(
            f"<tr><td><a href='#window-detail' data-goto='{index}' title='{html.escape(label)}: open this window'>{html.escape(short)}</a></td>"
            f"<td>{window['window']['rows']:,}</td><td class='{window['status']}'>{window['status']}</td>"
            f"<td>{percent(drift['drift_share'])}</td>{''.join(cells)}</tr>"
        )
    head = (
        f"<tr><th>window (start)</th><th>rows</th><th>status</th><th>drift share</th>{heads}</tr>"
    )
    note = (
        "<p class='note'>Each cell: the column's drift score divided by its threshold (for a "
        "test, the threshold divided by the p-value), so 1 or more is drift whatever the "
        "method; outlined in bold where it counts as drift. * drift expected by the contract: "
        "shown, not counted. Hover a cell for the score, threshold and method; click a window "
        "for its drift table and distributions.</p>"
    )
    return f"{charts.ratio_legend_html()}{note}<table class='heatmap' id='heatmap'>{head}{''.join(rows)}</table>"


# -- performance and service ------------------------------------------------------------------
def _performance(windows: list[dict[str, T.Any]], compared: Compared) -> str:
    task = next(
        (w["performance"].get("task") for w in windows if w.get("performance")),
        None,
    ) or (compared.contract.task if compared.contract is not None else "regression")
    return report_performance.performance_html(windows, task)


def _service(windows: list[dict[str, T.Any]]) -> str:
    """Latency percentiles and rows per hour per window, as the service captured them."""
    served = [w.get("service") or {} for w in windows]
    if not any(served):
        return ""
    labels = [charts.date_label(w["window"]["start"]) or f"#{i + 1}" for i, w in enumerate(windows)]
    latency = [
        charts.Series(name, [(s.get("latency_ms") or {}).get(key) for s in served])
        for name, key in (("median", "p50"), ("95th percentile", "p95"), ("99th percentile", "p99"))
    ]
    rate = [charts.Series("rows per hour", [s.get("rows_per_hour") for s in served])]
    return (
        "<h2 id='service'>Service</h2>"
        "<p class='note'>As the prediction service captured the rows: latency of the "
        "request that predicted each row, and rows per hour of the window's receiving time.</p>"
        f"<div class='pair'>{charts.lines_svg('Latency per window', labels, latency, 'milliseconds', 600)}"
        f"{charts.lines_svg('Rows per hour per window', labels, rate, 'rows per hour', 600)}</div>"
    )


# -- one window in detail -----------------------------------------------------------------------
def _window_detail(
    windows: list[dict[str, T.Any]],
    detectors: dict[str, Detector],
    shares: list[dict[str, np.ndarray]],
) -> list[str]:
    """The chosen window's summary and drift table, the distributions (one chart per column,
    redrawn by the script), and its data quality; the picker (``_picker``) stands above."""
    latest = len(windows) - 1
    labels = _labels(windows)
    parts = ["<h2 id='window-detail'>One window in detail</h2>"]
    unseen = any(
        q["unseen_categories"] for w in windows for q in w["data_quality"]["columns"].values()
    )
    for index, window in enumerate(windows):
        parts.append(
            f"<div class='per-window' data-window='{index}'{'' if index == latest else ' hidden'}>"
            f"<p>{_summary(window, labels[index])}</p>{_missing_columns(window, latest=False)}"
            f"<h3>Drift, {html.escape(labels[index])}</h3>{_drift_table(window)}</div>"
        )
    panels, data = _distributions(windows, detectors, shares, labels)
    if panels:
        parts += [
            f"<h3>Distributions, <span class='window-name'>{html.escape(labels[latest])}</span>, against the reference</h3>",
            "<p class='note'>Share of rows per category, or for numeric columns per bin of the "
            "reference's quantiles, drawn per mean bin width (the bins hold equal reference "
            "shares, not equal widths, so a narrow bin stands taller). One y scale per column "
            "for every window. Hover a bin for both shares.</p>",
            charts.legend_html(),
            f"<div class='grid'>{''.join(panels)}</div>",
        ]
    for index, window in enumerate(windows):
        parts.append(
            f"<div class='per-window' data-window='{index}'{'' if index == latest else ' hidden'}>"
            f"<h3>Data quality, {html.escape(labels[index])}</h3>{_quality_table(window, unseen)}</div>"
        )
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    parts.append(f"<script type='application/json' id='report-data'>{payload}</script>")
    return parts


def _labels(windows: list[dict[str, T.Any]]) -> list[str]:
    return [period_label(w["window"]["start"], w["window"]["end"]) for w in windows]


def _picker(windows: list[dict[str, T.Any]]) -> str:
    """The window picker, above everything shown per window (performance diagnostics, drift
    table, distributions, data quality) and sticky at the top of the page below it."""
    latest = len(windows) - 1
    options = "".join(
        f"<option value='{i}'{' selected' if i == latest else ''}>{html.escape(label)} ({w['status']})</option>"
        for i, (label, w) in enumerate(zip(_labels(windows), windows, strict=True))
    )
    return (
        f"<p class='picker'><label for='window'>Window </label><select id='window'>{options}</select> "
        f"<span class='note'>({len(windows)} window(s), the latest shown first: choosing one "
        "shows its performance diagnostics, drift table, distributions and data quality)</span></p>"
    )


def _summary(window: dict[str, T.Any], label: str) -> str:
    drift = window["data_drift"]
    quality = window["data_quality"]
    text = (
        f"{html.escape(label)}: {window['window']['rows']:,} rows ({quality['rejected_rows']:,} rejected), "
        f"status <span class='status {window['status']}'>{window['status']}</span>, "
        f"{drift['drifted_columns']} of {drift['counted_columns']} counted column(s) drift "
        f"({percent(drift['drift_share'])}; dataset drift at {_setting(drift['share_threshold'])})"
    )
    performance = window.get("performance") or {}
    metric = performance.get("metric")
    figure = (performance.get("current") or {}).get(metric)
    if metric and figure is not None:
        change = performance.get("relative_change")
        text += f", {html.escape(metric)} {number(figure)}"
        if change is not None:
            text += f" ({'+' if change >= 0 else '&minus;'}{percent(abs(change))} against the reference)"
    if performance.get("label_coverage") is not None:
        text += f", {percent(performance['label_coverage'])} of rows labelled"
    if window.get("model_version") is not None:
        text += f", model version {html.escape(str(window['model_version']))}"
    return text + "."


def _drift_table(window: dict[str, T.Any]) -> str:
    entries = _drift_entries(window)
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{html.escape(str(r['method']))}</td>"
        f"<td class='{'drift' if r['drift'] and not r.get('expected') else ''}'>{number(r['score'])}</td>"
        f"<td>{r['threshold']:g}</td><td>{_verdict(r)}</td></tr>"
        for c, r in entries.items()
    )
    return f"<table class='drift-table'><tr><th>column</th><th>method</th><th>score</th><th>threshold</th><th>verdict</th></tr>{rows}</table>"


def _verdict(entry: dict[str, T.Any]) -> str:
    """drift, ok, or for a column the contract expects to drift: "drift (expected)"."""
    if entry.get("missing_column"):
        return "missing"
    if not entry["drift"]:
        return "ok (expected)" if entry.get("expected") else "ok"
    return "drift (expected, not counted)" if entry.get("expected") else "drift"


def _chart_title(column: str, detector: Detector, verdict: dict[str, T.Any]) -> tuple[str, bool]:
    score = verdict.get("score")
    scored = "" if score is None else f" {number(score)}"
    expected = bool(verdict.get("expected"))
    limit = "expected" if expected else f"threshold {detector.threshold:g}"
    return f"{column}: {detector.method}{scored} ({limit})", bool(
        verdict.get("drift")
    ) and not expected


def _distributions(
    windows: list[dict[str, T.Any]],
    detectors: dict[str, Detector],
    shares: list[dict[str, np.ndarray]],
    labels: list[str],
) -> tuple[list[str], dict[str, T.Any]]:
    """One chart per column drawn for the latest window, and the data the script redraws
    the others from: each column's geometry, each window's titles and shares (4 decimals)."""
    latest = len(windows) - 1
    verdicts = [_drift_entries(w) for w in windows]
    panels: list[str] = []
    geometry: dict[str, T.Any] = {}
    per_window: list[dict[str, T.Any]] = [{} for _ in windows]
    for column, detector in detectors.items():
        currents = [s[column] for s in shares if column in s and s[column].size]
        if not currents:
            continue
        numeric = detector.kind == "numeric"
        # The bin of categories the reference never had, drawn only when some window has any.
        unseen = not numeric and any(c[-1] > 0 for c in currents)
        bins = len(detector.reference_shares) - (0 if numeric or unseen else 1)
        currents = [c[:bins] for c in currents]
        names = [_label(c) for c in detector.categories] + (["unseen"] if unseen else [])
        base = charts.Histogram(
            title=column,
            reference=detector.reference_shares[:bins],
            current=np.zeros(bins),
            edges=detector.edges if numeric else None,
            labels=() if numeric else tuple(names),
        )
        top = charts.histogram_top(base, currents)
        for index, window_shares in enumerate(shares):
            current = window_shares.get(column)
            if current is None or not current.size:
                continue
            title, drift = _chart_title(column, detector, verdicts[index].get(column, {}))
            per_window[index][column] = [
                title,
                int(drift),
                [round(float(s), 4) if math.isfinite(s) else 0.0 for s in current[:bins]],
            ]
        latest_shares = shares[latest].get(column, np.array([]))
        shown = bool(latest_shares.size)
        title, drift = (
            _chart_title(column, detector, verdicts[latest].get(column, {}))
            if shown
            else (f"{column}: no values in this window", False)
        )
        panel = dataclasses.replace(
            base,
            title=title,
            current=latest_shares[:bins] if shown else base.current,
            drift=drift,
            top=top,
        )
        panels.append(charts.histogram_svg(panel, column=column))
        drawn = charts.histogram_geometry(panel)
        geometry[column] = {"x": drawn.x, "k": drawn.k, "base": drawn.base}
    windows_data = [
        {"label": label, "columns": columns}
        for label, columns in zip(labels, per_window, strict=True)
    ]
    return panels, {"columns": geometry, "windows": windows_data}


def _label(category: T.Any) -> str:
    """A category as a chart label: numbers compact (3, not 3.0), anything else as text."""
    if isinstance(category, float | np.floating):
        return f"{category:g}"
    return str(category)


def _quality_table(window: dict[str, T.Any], unseen: bool) -> str:
    """Missing and out-of-range shares per column; unseen categories only when some window
    of the report has any (an always-empty column says nothing)."""
    rows = "".join(
        f"<tr><td>{html.escape(str(c))}{' (missing column)' if q.get('missing_column') else ''}</td>"
        f"<td>{percent(q['missing_share'])}</td><td>{percent(q['out_of_range_share'])}</td>"
        + (f"<td>{html.escape(', '.join(map(str, q['unseen_categories'])))}</td>" if unseen else "")
        + "</tr>"
        for c, q in window["data_quality"]["columns"].items()
    )
    quality = window["data_quality"]
    share = quality["rejected_share"]
    note = (
        f"<p>{quality['rejected_rows']:,} row(s) rejected by the service"
        + ("" if share is None else f" ({percent(share)} of the rows received)")
        + "; the shares below count accepted and rejected rows together.</p>"
    )
    head = (
        "<tr><th>column</th><th>missing</th><th>out of range</th>"
        + ("<th>unseen categories</th>" if unseen else "")
        + "</tr>"
    )
    return f"{note}<table>{head}{rows}</table>"
