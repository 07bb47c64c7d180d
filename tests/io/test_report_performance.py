"""The report's performance views, parsed as HTML: figures that follow the windows, small.

The windows come from the real monitor on generated tables (27 weekly windows, a model that
degrades in the second half), and each figure read back from the fragment is checked against
numpy or scikit-learn computed here on the same rows.
"""

from __future__ import annotations

import datetime as dt
import html.parser
import re
import typing as T
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from bikes.core.comparison import Slicing
from bikes.core.contract import Contract
from bikes.core.monitoring import Monitor
from bikes.io import report_performance
from bikes.io.report_performance import performance_html

NOW = dt.datetime(2026, 1, 1)
START = dt.datetime(2012, 7, 2)
VOID = {"br", "hr", "img", "input", "meta", "link", "wbr", "col"}


class _Tree(html.parser.HTMLParser):
    """HTML to an ElementTree, so the tests ask for elements, not for strings."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.builder = ET.TreeBuilder()
        self.builder.start("root", {})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.builder.start(tag, {k: v or "" for k, v in attrs})
        if tag in VOID:
            self.builder.end(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID:
            self.builder.end(tag)

    def handle_data(self, data: str) -> None:
        self.builder.data(data)


def _parse(fragment: str) -> ET.Element:
    parser = _Tree()
    parser.feed(fragment)
    parser.close()
    parser.builder.end("root")
    return parser.builder.close()


def _text(element: ET.Element) -> str:
    return "".join(element.itertext()).strip()


def _number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


def _per_window(root: ET.Element, view: str) -> list[ET.Element]:
    """A view's blocks, one per window, that the report's window picker shows one at a time
    (class ``per-window``)."""
    return [
        e
        for e in root.iter("div")
        if "per-window" in (e.get("class") or "").split() and e.get("data-view") == view
    ]


def _chart(root: ET.Element, name: str) -> list[ET.Element]:
    return [svg for svg in root.iter("svg") if svg.get("data-chart") == name]


# -- windows from the real monitor ------------------------------------------------------------
def _bikes(rows: int, seed: int, noise: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    season = rng.integers(1, 5, rows)
    truth = rng.gamma(2.0, 50.0, rows) * (1 + 0.2 * season)
    return pd.DataFrame(
        {
            "season": season,
            "temp": truth / 500 + rng.normal(0, 0.05, rows),
            "cnt": truth,
            "prediction": truth + rng.normal(0, noise, rows),
        }
    )


@pytest.fixture(scope="module")
def regression_windows() -> tuple[list[dict[str, T.Any]], list[pd.DataFrame]]:
    contract = Contract(task="regression", target="cnt", segments=["season"]).with_columns(
        _bikes(10, 0, 1.0)
    )
    monitor = Monitor(
        _bikes(3_000, 1, 20.0), contract, ["season", "temp"], slicing=Slicing(columns=["season"])
    )
    windows, frames = [], []
    for week in range(27):
        frame = _bikes(400, 100 + week, 20.0 if week < 14 else 45.0)  # worse from week 14
        start = START + dt.timedelta(weeks=week)
        windows.append(monitor.window(frame, start, start + dt.timedelta(weeks=1), NOW))
        frames.append(frame)
    return windows, frames


def test_every_regression_metric_is_charted_over_the_windows_against_its_reference(
    regression_windows: tuple[list[dict[str, T.Any]], list[pd.DataFrame]],
) -> None:
    windows, frames = regression_windows
    root = _parse(performance_html(windows, "regression"))
    headings = [_text(h) for h in root.iter("h2")]
    assert headings == [
        "Performance over time",
        "Residuals by window",
        "Predicted against actual",
        "Performance per segment",
    ]
    for metric in ("rmse", "mae", "r2", "mape"):
        (svg,) = _chart(root, f"metric-{metric}")
        points = svg.findall("circle")
        assert len(points) == 27
        for point, frame in zip(points, frames, strict=True):
            said = _text(point)
            figure = float(re.search(rf"{metric} (-?[\d.,]+)", said)[1].replace(",", ""))  # type: ignore[index]
            truth, predicted = frame["cnt"], frame["prediction"]
            expected = {
                "rmse": metrics.root_mean_squared_error(truth, predicted),
                "mae": metrics.mean_absolute_error(truth, predicted),
                "r2": metrics.r2_score(truth, predicted),
                "mape": metrics.mean_absolute_percentage_error(truth + 1, predicted + 1),
            }[metric]
            assert figure == pytest.approx(expected, rel=0.006)  # three significant figures
        dashed = [line for line in svg.iter("line") if line.get("stroke-dasharray") == "6 4"]
        assert len(dashed) == 1
        assert _text(dashed[0]).startswith("reference ")
        dates = [
            t.text for t in svg.iter("text") if re.fullmatch(r"\d{4}-\d{2}-\d{2}", t.text or "")
        ]
        assert dates[0] == "2012-07-02"
        assert len(dates) >= 4
        (labels,) = [g for g in svg.iter("g") if g.get("class") == "y-ticks"]
        ticks = [_number(t.text or "") for t in labels.iter("text")]
        assert len(ticks) >= 3
        assert ticks == sorted(ticks)
    (rmse,) = _chart(root, "metric-rmse")
    marked = [p.get("fill") for p in rmse.findall("circle")]
    degraded = [bool(w["performance"]["degraded"]) for w in windows]
    assert any(degraded[14:])
    assert not any(degraded[:14])
    assert [f == report_performance.VERMILLION for f in marked] == degraded
    assert any("alert at" in _text(t) for t in rmse.iter("text"))  # the watched metric only
    (mae,) = _chart(root, "metric-mae")
    assert not any("alert at" in _text(t) for t in mae.iter("text"))


def test_residual_boxes_and_predicted_against_actual_follow_the_rows(
    regression_windows: tuple[list[dict[str, T.Any]], list[pd.DataFrame]],
) -> None:
    windows, frames = regression_windows
    root = _parse(performance_html(windows, "regression"))
    (residuals,) = _chart(root, "residuals")
    boxes = [g for g in residuals.iter("g") if g.get("class") == "box"]
    assert len(boxes) == 27
    for box, frame in zip(boxes, frames, strict=True):
        said = _text(box)
        median = float(re.search(r"median (-?[\d.,]+)", said)[1].replace(",", ""))  # type: ignore[index]
        expected = np.median(frame["cnt"] - frame["prediction"])
        assert median == pytest.approx(expected, rel=0.006, abs=0.006)
    # Wider errors from week 14: the boxes (middle half of the residuals) grow taller.
    heights = [float(box.find("rect").get("height")) for box in boxes]  # type: ignore[union-attr]
    assert np.mean(heights[14:]) > 1.8 * np.mean(heights[:14])
    # One block per window, toggled by the report's window picker: only the latest shown.
    blocks = _per_window(root, "predicted-actual")
    assert [b.get("data-window") for b in blocks] == [str(i) for i in range(27)]
    assert [b.get("hidden") is None for b in blocks] == [False] * 26 + [True]
    assert all(len(_chart(b, "predicted-actual")) == 1 for b in blocks)
    latest = frames[-1]
    (heatmap,) = _chart(blocks[-1], "predicted-actual")
    cell = 10  # pixels: 20 bins on 200
    cells = 0  # rectangles of cells of one colour, as many cells as their area says
    for path in heatmap.iter("path"):
        if path.get("fill") in report_performance.VIRIDIS:
            for width, height in re.findall(r"h(\d+)v(\d+)h-", path.get("d", "")):
                cells += int(width) * int(height) // cell**2
    edges = np.array(windows[-1]["diagnostics"]["edges"])
    counts, _, _ = np.histogram2d(latest["cnt"], latest["prediction"], bins=[edges, edges])
    assert cells == np.count_nonzero(counts)
    assert edges[0] <= min(latest["cnt"].min(), latest["prediction"].min())


def test_the_segment_table_compares_the_latest_window_with_the_reference(
    regression_windows: tuple[list[dict[str, T.Any]], list[pd.DataFrame]],
) -> None:
    windows, frames = regression_windows
    root = _parse(performance_html(windows, "regression"))
    blocks = _per_window(root, "segments")  # one per window, for the window picker
    assert [b.get("hidden") is None for b in blocks] == [False] * 26 + [True]
    table = next(t for t in blocks[-1].iter("table") if t.get("class") == "segments-table")
    rows = [[_text(c) for c in row] for row in table.findall("tr")[1:]]
    latest = frames[-1]
    assert [r[1] for r in rows] == ["1", "2", "3", "4"]
    for row in rows:
        part = latest[latest["season"] == int(row[1])]
        assert _number(row[2]) == len(part)
        rmse = metrics.root_mean_squared_error(part["cnt"], part["prediction"])
        assert _number(row[3]) == pytest.approx(rmse, rel=0.006)
        assert row[5].endswith("worse")  # noise 45 against 20: more than 20% worse everywhere


def _weather(rows: int, seed: int, strength: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, rows)
    score = 1 / (1 + np.exp(-3 * x))
    truth = np.where(rng.random(rows) < 1 / (1 + np.exp(-strength * x)), "rain", "dry")
    return pd.DataFrame(
        {"x": x, "y": truth, "prediction": np.where(score > 0.5, "rain", "dry"), "p_rain": score}
    )


def test_classification_windows_show_the_confusion_matrix_roc_and_calibration() -> None:
    contract = Contract(task="classification", target="y", score="p_rain").with_columns(
        _weather(10, 0, 3.0)
    )
    monitor = Monitor(_weather(2_000, 1, 3.0), contract, ["x"])
    frames = [_weather(1_500, 10 + k, 3.0 if k < 2 else 0.7) for k in range(4)]
    windows = [
        monitor.window(f, START + dt.timedelta(days=k), START + dt.timedelta(days=k + 1), NOW)
        for k, f in enumerate(frames)
    ]
    root = _parse(performance_html(windows, "classification"))
    assert [_text(h) for h in root.iter("h2")] == ["Performance over time", "Classes by window"]
    charted = {svg.get("data-chart") for svg in root.iter("svg")}
    assert {
        f"metric-{m}" for m in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
    } <= charted
    details = _per_window(root, "classes")
    assert [d.get("data-window") for d in details] == ["0", "1", "2", "3"]
    assert [d.get("hidden") is None for d in details] == [False, False, False, True]
    for detail in details:
        frame = frames[int(detail.get("data-window", ""))]
        table = detail.find(".//table")
        assert table is not None
        found = [
            [int(_number(cell.text or "")) for cell in row.findall("td")[:-1]]
            for row in table.findall("tr")[1:]
        ]
        expected = metrics.confusion_matrix(frame["y"], frame["prediction"], labels=["dry", "rain"])
        assert found == expected.tolist()
        (roc,) = _chart(detail, "roc")
        (curve,) = [p for p in roc.iter("polyline")]
        auc = float(re.search(r"AUC ([\d.]+)", _text(curve))[1])  # type: ignore[index]
        assert auc == pytest.approx(
            metrics.roc_auc_score(frame["y"] == "rain", frame["p_rain"]), abs=0.0006
        )
        assert len(curve.get("points", "").split()) <= 50
        (calibration,) = _chart(detail, "calibration")
        rows, _ = np.histogram(frame["p_rain"], bins=np.linspace(0, 1, 11))
        assert len(calibration.findall("circle")) == np.count_nonzero(rows)
    aucs = [float(re.search(r"AUC rain ([\d.]+)", _text(d.find("p")))[1]) for d in details]  # type: ignore[arg-type,index]
    assert max(aucs[2:]) < min(aucs[:2])  # the latest two windows: labels less predictable


def test_the_fragment_is_self_contained_well_formed_and_small(
    regression_windows: tuple[list[dict[str, T.Any]], list[pd.DataFrame]],
) -> None:
    windows, _ = regression_windows
    fragment = performance_html(windows, "regression")
    assert "<script" not in fragment
    assert not re.search(r"(src|href)=", fragment)
    assert "http" not in fragment  # nothing fetched at view time
    for svg in re.findall(r"<svg.*?</svg>", fragment, flags=re.S):
        ET.fromstring(svg)  # each chart is well-formed XML
    assert len(fragment.encode()) < 350_000, len(fragment.encode())  # 27 weekly windows


def test_no_labels_says_so() -> None:
    contract = Contract(task="regression", target="cnt").with_columns(_bikes(10, 0, 1.0))
    monitor = Monitor(_bikes(500, 1, 20.0), contract, ["temp"])
    window = monitor.window(_bikes(100, 2, 20.0).drop(columns="cnt"), None, None, NOW)
    root = _parse(performance_html([window], "regression"))
    assert "performance is unknown" in _text(root)
    assert not list(root.iter("svg"))
