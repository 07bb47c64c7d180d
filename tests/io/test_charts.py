"""The report's SVG charts: geometry that follows the data, exact figures in tooltips."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from bikes.io import charts

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg.replace("<svg ", "<svg xmlns='http://www.w3.org/2000/svg' ", 1))


def _points(element: ET.Element) -> list[tuple[float, float]]:
    return [
        (float(x), float(y))
        for x, y in (pair.split(",") for pair in element.attrib["points"].split())
    ]


def test_numeric_histograms_draw_densities_over_the_bin_edges() -> None:
    edges = np.array([0.0, 1.0, 3.0])  # the second bin is twice as wide
    panel = charts.Histogram(
        "temp: wasserstein 0.5", np.array([0.5, 0.5]), np.array([0.2, 0.8]), edges, drift=True
    )
    root = _parse(charts.histogram_svg(panel))
    reference = _points(root.find(f"{SVG}polygon"))  # type: ignore[arg-type]
    current = _points(root.find(f"{SVG}polyline"))  # type: ignore[arg-type]
    assert len(reference) == len(current) == 2 * 2 + 2  # two steps, closed at the baseline
    # Equal shares over unequal widths: the narrow bin stands twice as tall (density).
    base = reference[0][1]
    narrow, wide = base - reference[1][1], base - reference[3][1]
    assert narrow == pytest.approx(2 * wide, abs=0.2)
    assert reference[0][0] < reference[-1][0]
    title = root.find(f"{SVG}text")
    assert title is not None
    assert title.attrib["class"] == "drift"
    tips = [t.text for t in root.iter(f"{SVG}title")]
    assert tips == [
        "[0, 1): reference 50.0%, current 20.0%",
        "[1, 3): reference 50.0%, current 80.0%",
    ]


def test_categorical_histograms_label_every_category_or_every_other() -> None:
    few = charts.Histogram(
        "season",
        np.array([0.25] * 4 + [0.0]),
        np.array([0.1, 0.2, 0.3, 0.4, 0.0]),
        labels=("1", "2", "3", "4", "unseen"),
    )
    labels = {t.text for t in _parse(charts.histogram_svg(few)).iter(f"{SVG}text")}
    assert {"1", "2", "3", "4", "unseen"} <= labels
    hours = (*(str(h) for h in range(24)), "unseen")
    many = charts.Histogram("hr", np.full(25, 1 / 24), np.full(25, 1 / 24), labels=hours)
    texts = {t.text for t in _parse(charts.histogram_svg(many)).iter(f"{SVG}text")}
    assert {"0", "2", "22"} <= texts
    assert "1" not in texts  # 25 labels do not fit: every other one


def test_the_line_chart_marks_every_window_with_its_value() -> None:
    svg = charts.line_svg("RMSE", ["2012-07", "2012-08"], [81.25, 78.5], 38.4, "bikes per hour")
    root = _parse(svg)
    circles = list(root.iter(f"{SVG}circle"))
    assert len(circles) == 2
    assert circles[0].find(f"{SVG}title").text == "2012-07: 81.25 bikes per hour"  # type: ignore[union-attr]
    assert float(circles[0].attrib["cy"]) < float(circles[1].attrib["cy"])  # higher RMSE, higher
    assert re.search(r"reference 38\.4<", svg)
    small = charts.line_svg("f1", ["2023-05-25"], [0.83126], 0.9, "f1 (higher is better)")
    assert "2023-05-25: 0.8313 f1 (higher is better)" in small  # not rounded to 0.8
