"""The HTML report of a real monitor's windows: what was compared, drift over time against
the thresholds, every window's own drift table and distributions, numbers for reading."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import typing as T

import numpy as np
import pandas as pd
import pytest

from bikes.core.contract import Contract, Feature
from bikes.core.monitoring import Monitor
from bikes.io import charts, reports

START = dt.datetime(2026, 3, 1)
NOW = dt.datetime(2026, 6, 1)


def _table(
    rows: int, seed: int, shift: float = 0.0, shops: tuple[str, ...] = ("a", "b")
) -> pd.DataFrame:
    """Rows of a regression: ``temp`` (numeric, shifted by ``shift``), ``shop`` (a string),
    the label ``y`` and a model's ``prediction``, and what the service captured."""
    rng = np.random.default_rng(seed)
    temp = rng.normal(20 + shift, 5, rows)
    y = 3 * temp + rng.normal(0, 2, rows)
    return pd.DataFrame(
        {
            "when": pd.date_range("2026-01-01", periods=rows, freq="h"),
            "temp": temp,
            "shop": rng.choice(list(shops), rows),
            "y": y,
            "prediction": 3 * temp,
        }
    )


CONTRACT = Contract(
    target="y",
    timestamp="when",
    features=[Feature(name="temp", kind="numeric"), Feature(name="shop", kind="categorical")],
)


def _windows(
    currents: list[pd.DataFrame], contract: Contract = CONTRACT
) -> tuple[Monitor, list[dict[str, T.Any]]]:
    monitor = Monitor(_table(2000, 0), contract, ["temp", "shop"])
    results = []
    for index, frame in enumerate(currents):
        start = START + dt.timedelta(days=7 * index)
        current = frame.assign(
            event_time=start + pd.to_timedelta(np.arange(len(frame)), unit="min"),
            latency_ms=np.arange(len(frame)) % 20 + 5.0 * (index + 1),
        )
        results.append(monitor.window(current, start, start + dt.timedelta(days=7), NOW))
    return monitor, results


def _render(
    monitor: Monitor, windows: list[dict[str, T.Any]], retraining: dict[str, T.Any] | None = None
) -> str:
    return reports.render(
        windows,
        monitor.detectors,
        monitor.window_shares,
        title="shop monitoring",
        compared=reports.Compared(
            reference="the reference data of models:/shop/2",
            reference_rows=monitor.reference_rows,
            reference_period=monitor.reference_period,
            contract=monitor.contract,
            contract_source="from the job's config",
        ),
        retraining=retraining,
    )


def _data(report: str) -> dict[str, T.Any]:
    found = re.search(r"<script type='application/json' id='report-data'>(.*?)</script>", report)
    assert found
    return T.cast(dict[str, T.Any], json.loads(found.group(1)))


def _cells(report: str) -> list[dict[str, str]]:
    """The heatmap's scored cells: their class, style, tooltip and text."""
    table = re.search(r"<table class='heatmap' id='heatmap'>.*?</table>", report)
    assert table
    return [
        {"class": c, "style": s, "title": html.unescape(t), "text": x}
        for c, s, t, x in re.findall(
            r"<td class='([^']*)' style='([^']*)' title='([^']*)'>([^<]*)</td>", table.group(0)
        )
    ]


def test_every_window_keeps_its_own_binned_shares_for_the_report() -> None:
    """Three windows: as the reference, temp up by two standard deviations, one shop only.
    Each window's shares in the report are its own, checked against numpy's histogram."""
    currents = [_table(800, 1), _table(800, 2, shift=10.0), _table(800, 3, shops=("b",))]
    monitor, windows = _windows(currents)
    assert len(monitor.window_shares) == 3
    report = _render(monitor, windows)
    data = _data(report)
    edges = monitor.detectors["temp"].edges
    for index, frame in enumerate(currents):
        inner = np.histogram(frame["temp"], np.concatenate(([-np.inf], edges[1:-1], [np.inf])))[0]
        shares = data["windows"][index]["columns"]["temp"][2]
        assert shares == pytest.approx(inner / len(frame), abs=6e-5)  # 4 decimals
    assert data["windows"][2]["columns"]["shop"][2] == [0.0, 1.0]  # no unseen bin: none seen
    assert data["windows"][1]["columns"]["temp"][1] == 1  # drawn as drift
    assert data["windows"][0]["columns"]["temp"][1] == 0
    assert [w["label"] for w in data["windows"]] == [
        "2026-03-01 → 2026-03-08",
        "2026-03-08 → 2026-03-15",
        "2026-03-15 → 2026-03-22",
    ]
    # The latest window is drawn in the page itself (no script needed to read it) ...
    drawn = re.search(r"<svg [^>]*data-column='temp'.*?</svg>", report)
    assert drawn
    assert "temp: wasserstein" in drawn.group(0)
    # ... and each window has its own drift table, only the latest shown at first.
    blocks = re.findall(r"<div class='per-window' data-window='(\d)'( hidden)?><p>", report)
    assert blocks == [("0", " hidden"), ("1", " hidden"), ("2", "")]
    tables = re.findall(r"<table class='drift-table'>.*?</table>", report)
    assert len(tables) == 3
    temp_scores = [
        re.search(r"<td>temp</td><td>wasserstein</td><td class='(drift)?'>([^<]+)", t)
        for t in tables
    ]
    assert [m.group(2) if m else "" for m in temp_scores] == [
        charts.number(w["data_drift"]["columns"]["temp"]["score"]) for w in windows
    ]


def test_the_heatmap_colours_each_score_against_its_threshold() -> None:
    monitor, windows = _windows([_table(800, 1), _table(800, 2, shift=10.0)])
    report = _render(monitor, windows)
    cells = _cells(report)
    columns = ["temp", "shop", "y", "prediction"]  # the features, then the label and the output
    assert len(cells) == 2 * len(columns)
    for cell, (window, column) in zip(
        cells, [(w, c) for w in windows for c in columns], strict=True
    ):
        entries = window["data_drift"]["columns"] | {
            window["prediction_drift"]["column"]: window["prediction_drift"],
            window["target_drift"]["column"]: window["target_drift"],
        }
        entry = entries[column]
        ratio = entry["score"] / entry["threshold"]  # distances: drift at or above 1
        assert float(cell["text"]) == pytest.approx(ratio, rel=0.05)
        assert f"background:{charts.ratio_colour(ratio)[0]}" in cell["style"]
        assert cell["title"].startswith(f"{column}, {charts.period_label(*_period(window))}: ")
        assert f"threshold {entry['threshold']:g}" in cell["title"]
        assert ("hit" in cell["class"]) == entry["drift"]
    shifted = cells[len(columns)]
    assert float(shifted["text"]) > 1
    assert "drift" in shifted["title"]
    assert ">2026-03-08</a>" in report  # windows by date, linked to their detail
    assert "T00:00:00" not in report.split("<script")[0]  # no timestamps in what is read


def _period(window: dict[str, T.Any]) -> tuple[str, str]:
    return window["window"]["start"], window["window"]["end"]


def test_a_test_p_value_is_turned_so_that_one_is_the_threshold_too() -> None:
    assert reports.strength({"method": "ks", "score": 0.01, "threshold": 0.05}) == pytest.approx(5)
    assert reports.strength({"method": "ks", "score": 0.5, "threshold": 0.05}) == pytest.approx(0.1)
    assert reports.strength({"method": "psi", "score": 0.3, "threshold": 0.1}) == pytest.approx(3)
    assert reports.strength({"method": "psi", "score": None, "threshold": 0.1}) is None


def test_the_header_says_what_was_compared() -> None:
    monitor, windows = _windows([_table(300, 1), _table(240, 2)])
    report = _render(monitor, windows)
    header = re.search(r"<section id='compared'>.*?</section>", report)
    assert header
    text = html.unescape(re.sub(r"<[^>]+>", "", header.group(0)))
    assert (
        "the reference data of models:/shop/2: 2,000 rows, events from 2026-01-01 to 2026-03-25"
        in text
    )
    assert "2 window(s), 2026-03-01 → 2026-03-15: 540 rows (240 to 300 per window)" in text
    assert (
        "regression; target y; prediction prediction; event time when; 2 feature(s): temp, shop"
        in text
    )
    assert "wasserstein (score at or above 0.1): temp, y, prediction" in text
    assert "jensenshannon (score at or above 0.1): shop" in text
    assert "dataset drift when at least 50% of the counted columns drift" in text
    assert "performance degraded when rmse is 20% higher than the reference's" in text


def test_unseen_categories_are_a_column_only_when_some_window_has_them() -> None:
    monitor, windows = _windows([_table(300, 1), _table(300, 2)])
    assert "unseen categories" not in _render(monitor, windows)
    assert ">unseen</text>" not in _render(monitor, windows)  # nor the charts' unseen bin
    monitor, windows = _windows([_table(300, 1), _table(300, 2, shops=("a", "b", "c"))])
    report = _render(monitor, windows)
    assert report.count("<th>unseen categories</th>") == 2  # in both windows' quality tables
    assert "<td>c</td>" in report
    data = _data(report)
    assert len(data["windows"][1]["columns"]["shop"][2]) == 3  # a, b and the unseen bin
    assert data["windows"][1]["columns"]["shop"][2][2] == pytest.approx(1 / 3, abs=0.06)
    assert ">unseen</text>" in report


def test_numbers_are_read_at_three_figures_and_service_is_drawn_per_window() -> None:
    monitor, windows = _windows([_table(800, 1), _table(800, 2, shift=10.0)])
    report = _render(monitor, windows)
    for table in re.findall(r"<table class='drift-table'>.*?</table>", report):
        for score in re.findall(r"<td class='(?:drift)?'>([^<]+)</td>", table):
            digits = score.replace(".", "").replace(",", "").lstrip("0")
            assert len(digits) == 3, score  # 0.556 and 0.00433 alike, never 0.5556
    assert "Latency per window" in report
    assert "Rows per hour per window" in report
    latency = re.search(r"<svg [^>]*aria-label='Latency per window'.*?</svg>", report)
    assert latency
    medians = [w["service"]["latency_ms"]["p50"] for w in windows]
    assert medians[1] == medians[0] + 5  # the second window's service was 5 ms slower
    assert f"2026-03-08: median {charts.number(medians[1])} milliseconds" in latency.group(0)
    assert re.search(
        r"<select id='window'>.*2026-03-08 → 2026-03-15 \(\w+\)</option></select>", report
    )


def test_only_the_latest_shares_still_render() -> None:
    """The former call (the latest window's shares alone) draws that window; others have
    their tables and no distributions."""
    monitor, windows = _windows([_table(300, 1), _table(300, 2)])
    report = reports.render(windows, monitor.detectors, monitor.latest_shares)
    data = _data(report)
    assert data["windows"][0]["columns"] == {}
    assert set(data["windows"][1]["columns"]) == {"temp", "shop", "prediction", "y"}


def test_the_window_picker_stands_above_every_view_it_switches() -> None:
    """Three labelled windows: one picker, above the performance views, and per window one
    block of diagnostics, one drift table and one data quality table, the latest shown."""
    monitor, windows = _windows([_table(300, 1), _table(300, 2, shift=10.0), _table(300, 3)])
    report = _render(monitor, windows)
    assert report.count("<select id='window'>") == 1
    assert report.index("<select id='window'>") < report.index("<h2 id='performance'>")
    blocks = re.findall(
        r"<div class='per-window(?: perf-window' data-view='([\w-]+))?' data-window='(\d+)'"
        r"( hidden)?>",
        report,
    )
    for index in range(3):
        mine = [(view, hidden) for view, i, hidden in blocks if i == str(index)]
        assert sorted(view for view, _ in mine) == ["", "", "predicted-actual"]
        assert {hidden for _, hidden in mine} == {"" if index == 2 else " hidden"}
    perf = re.findall(
        r"<div class='per-window perf-window' data-view='predicted-actual' data-window='(\d)'"
        r"[^>]*>(.*?)</div>",
        report,
    )
    assert [i for i, _ in perf] == ["0", "1", "2"]
    assert all("data-chart='predicted-actual'" in body for _, body in perf)
    assert re.search(r"<g class='box' data-window='1'>", report)  # the script marks the chosen


PROMOTED = {
    "status": "promoted",
    "model_name": "shop",
    "trigger": "finding",
    "monitoring_run_id": "m0n1",
    "window": {"start": "2026-03-01T00:00:00", "end": "2026-03-14T23:00:00"},
    "holdout": {"start": "2026-03-15T00:00:00", "end": "2026-03-21T23:00:00", "rows": 168},
    "rows": {"store": 336, "training_data": 10_000, "total": 10_336},
    "run_id": "r3tr41n",
    "model_version": "4",
    "training_run_id": "tr41n",
    "gate_rows": 1_168,
    "verdict": "passed",
    "promoted": True,
    "evaluations_run_id": "g4t3",
    "champion_version": "4",
}


def _section(report: str) -> str | None:
    found = re.search(r"<section id='retraining'.*?</section>", report)
    return None if found is None else html.unescape(re.sub(r"<[^>]+>", " ", found.group(0)))


def test_the_retraining_a_finding_started_is_told_and_only_then() -> None:
    monitor, windows = _windows([_table(300, 1), _table(300, 2, shift=10.0)])
    assert _section(_render(monitor, windows)) is None  # no retraining asked
    assert _section(_render(monitor, windows, {"status": "no_finding"})) is None
    promoted = _section(_render(monitor, windows, PROMOTED))
    assert promoted is not None
    said = " ".join(promoted.split())
    assert "Retraining" in said
    assert "version 4 passed the gate and was promoted" in said
    assert "Gate verdict passed" in said
    assert "10,336 rows (336 labelled store rows of 2026-03-01 → 2026-03-14 23:00" in said
    assert "1,168 rows (168 held out, 2026-03-15 → 2026-03-21 23:00)" in said
    assert "retraining r3tr41n, training tr41n, gate g4t3" in said
    blocked = PROMOTED | {
        "status": "blocked",
        "model_version": "5",
        "verdict": "failed",
        "promoted": False,
        "champion_version": None,
        "reason": "root_mean_squared_error: 91.2 is not at most 80 <script>",
    }
    text = _render(monitor, windows, blocked)
    said = " ".join((_section(text) or "").split())
    assert "version 5 was blocked by the gate: the champion stays" in said
    assert "Gate verdict failed" in said
    assert "91.2 is not at most 80 <script>" in said  # the gate's reason, escaped in the page
    assert "80 <script>" not in text
    assert "Champion" not in said
    cooldown = {"status": "cooldown", "last_trigger": "2026-03-20T10:00:00", "cooldown": "7D"}
    said = " ".join((_section(_render(monitor, windows, cooldown)) or "").split())
    assert "no retraining: one started at 2026-03-20 10:00 and the cooldown (7D)" in said
