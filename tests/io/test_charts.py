"""The report's SVG charts and number formats: geometry that follows the data, exact figures
in tooltips, numbers and dates as people read them."""

from __future__ import annotations

import datetime as dt
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


def _x_labels(root: ET.Element) -> list[str]:
    """The labels under the x axis (the y axis's labels stand left of it)."""
    below = charts.HEIGHT - charts.BOTTOM + 13
    return [
        t.text or ""
        for t in root.iter(f"{SVG}text")
        if float(t.attrib.get("y", 0)) == below and t.attrib.get("text-anchor") == "middle"
    ]


def _y_ticks(root: ET.Element) -> dict[float, float]:
    """y-axis label value -> pixel row, read from the SVG."""
    ticks = {}
    for text in root.iter(f"{SVG}text"):
        if text.attrib.get("text-anchor") == "end" and text.text:
            ticks[float(text.text.replace(",", ""))] = float(text.attrib["y"]) - 3
    return ticks


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5556, "0.556"),
        (0.004326, "0.00433"),  # beside 0.556, not 0.004326
        (130.7359, "131"),
        (1.0, "1.00"),
        (9.996, "10.0"),  # rounding carries into a new digit: still three figures
        (12345.6, "12,300"),
        (-0.45538, "-0.455"),
        (0.0000123, "1.23e-05"),
        (81.26, "81.3"),
        (1234.0, "1,230"),
        (-0.0412, "-0.0412"),
        (0.0, "0"),
        (None, "n/a"),
        (float("nan"), "n/a"),
    ],
)
def test_numbers_have_three_significant_figures(value: float | None, expected: str) -> None:
    assert charts.number(value) == expected


def test_percentages_dates_and_periods_read_as_written_by_hand() -> None:
    assert charts.percent(2 / 3) == "66.7%"
    assert charts.percent(0.005952) == "0.595%"
    assert charts.percent(1.0) == "100%"
    assert charts.percent(0.0) == "0%"
    assert charts.date_label("2012-07-01T00:00:00") == "2012-07-01"
    assert charts.date_label(dt.datetime(2012, 7, 1, 13, 0)) == "2012-07-01 13:00"
    assert charts.period_label("2012-07-01T00:00:00", "2012-07-08T00:00:00") == (
        "2012-07-01 → 2012-07-08"
    )
    assert charts.period_label(None, None) == "latest rows"
    assert charts.date_label("not a date") == "not a date"  # shown as written, not raised
    assert charts.tick_labels([0.0, 0.25]) == ["0", "0.25"]
    assert charts.tick_labels([0.0, 500.0, 1000.0, 1500.0])[-1] == "1,500"


@pytest.mark.parametrize(
    ("top", "expected"),
    [(4.17, [0, 2, 4, 6]), (100.0, [0, 25, 50, 75, 100]), (0.83, [0, 0.25, 0.5, 0.75, 1.0])],
)
def test_ticks_are_round_and_reach_the_top(top: float, expected: list[float]) -> None:
    assert charts.nice_ticks(0.0, top) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("low", "high"), [(0.0, 1.0), (38.2, 130.7), (-12.0, 47.0), (0.81, 0.84), (5.0, 5.0)]
)
def test_ticks_are_round_and_cover_the_range(low: float, high: float) -> None:
    ticks = charts.nice_ticks(low, high)
    assert ticks[0] <= low
    assert ticks[-1] >= high
    assert 2 <= len(ticks) <= 8
    steps = np.diff(ticks)
    assert steps == pytest.approx(np.full(len(steps), steps[0]))
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]) + 1e-9)
    assert any(mantissa == pytest.approx(m) for m in (1, 2, 2.5, 5))


def test_tick_labels_share_the_decimals_their_step_needs() -> None:
    assert charts.tick_labels([50.0, 75.0, 100.0]) == ["50", "75", "100"]
    assert charts.tick_labels([0.2, 0.4, 0.6]) == ["0.2", "0.4", "0.6"]
    assert charts.tick_labels([0.0, 0.25, 0.5]) == ["0", "0.25", "0.50"]
    # Not evenly spaced (a histogram's outer edges and median): three figures each.
    assert charts.tick_labels([0.02, 0.4137, 0.98]) == ["0.0200", "0.414", "0.980"]


def test_numeric_histograms_draw_densities_over_the_bin_edges() -> None:
    edges = np.array([0.0, 1.0, 3.0])  # the second bin is twice as wide
    panel = charts.Histogram(
        "temp: wasserstein 0.5", np.array([0.5, 0.5]), np.array([0.2, 0.8]), edges, drift=True
    )
    root = _parse(charts.histogram_svg(panel, column="temp"))
    assert root.attrib["data-column"] == "temp"
    reference = _points(root.find(f"{SVG}polygon"))  # type: ignore[arg-type]
    current = _points(root.find(f"{SVG}polyline[@class='current']"))  # type: ignore[arg-type]
    assert len(reference) == len(current) == 2 * 2 + 2  # two steps, closed at the baseline
    # Equal shares over unequal widths: the narrow bin stands twice as tall (density).
    base = reference[0][1]
    narrow, wide = base - reference[1][1], base - reference[3][1]
    assert narrow == pytest.approx(2 * wide, abs=0.2)
    assert reference[0][0] < reference[-1][0]
    # The y axis is in percent per bin of the mean width (1.5 here): the wide bin's 50% over
    # 2 units reads 0.5 / 2 * 1.5 = 37.5%, read off the drawn ticks.
    ticks = _y_ticks(root)
    (low, y_low), (high, y_high) = min(ticks.items()), max(ticks.items())
    per_unit = (y_low - y_high) / (high - low)
    assert (base - reference[3][1]) / per_unit == pytest.approx(37.5, abs=0.5)
    assert (base - current[3][1]) / per_unit == pytest.approx(0.8 / 2 * 1.5 * 100, abs=0.5)
    title = root.find(f"{SVG}text")
    assert title is not None
    assert title.attrib["class"] == "drift"
    assert any(t.text == "% of rows per mean bin" for t in root.iter(f"{SVG}text"))
    tips = [t.text for t in root.iter(f"{SVG}title")]
    assert tips == [
        "[0, 1.00): reference 50.0%, current 20.0%",
        "[1.00, 3.00): reference 50.0%, current 80.0%",
    ]


def test_a_fixed_top_keeps_one_scale_and_the_geometry_redraws_any_window() -> None:
    """The report's script redraws a window's line from ``Geometry``: the same points as the
    chart drawn for those shares."""
    reference = np.array([0.25, 0.25, 0.5])
    windows = [np.array([0.1, 0.1, 0.8]), np.array([0.6, 0.3, 0.1])]
    labels = ("a", "b", "c")
    top = charts.histogram_top(charts.Histogram("x", reference, windows[0], labels=labels), windows)
    assert top == pytest.approx(80.0)  # the highest share of any window, in percent
    for shares in windows:
        panel = charts.Histogram("x", reference, shares, labels=labels, top=top)
        root = _parse(charts.histogram_svg(panel))
        drawn = _points(root.find(f"{SVG}polyline[@class='current']"))  # type: ignore[arg-type]
        expected = charts.histogram_geometry(panel).points(shares)
        flat = [value for point in expected for value in point]
        assert [value for point in drawn for value in point] == pytest.approx(flat, abs=0.06)
        assert max(_y_ticks(root)) == 80  # the same axis for both windows
    first = charts.histogram_geometry(charts.Histogram("x", reference, windows[0], labels=labels))
    assert first.base - first.points(windows[0])[5][1] == pytest.approx(
        charts.HEIGHT - charts.BOTTOM - charts.TOP  # 80% reaches the top tick
    )


def test_categorical_histograms_label_every_category_or_every_other() -> None:
    few = charts.Histogram(
        "season",
        np.array([0.25] * 4 + [0.0]),
        np.array([0.1, 0.2, 0.3, 0.4, 0.0]),
        labels=("1", "2", "3", "4", "unseen"),
    )
    root = _parse(charts.histogram_svg(few))
    assert _x_labels(root) == ["1", "2", "3", "4", "unseen"]
    assert any(t.text == "% of rows" for t in root.iter(f"{SVG}text"))
    assert sorted(_y_ticks(root)) == [0, 10, 20, 30, 40]
    hours = (*(str(h) for h in range(24)), "unseen")
    many = charts.Histogram("hr", np.full(25, 1 / 24), np.full(25, 1 / 24), labels=hours)
    texts = _x_labels(_parse(charts.histogram_svg(many)))
    assert {"0", "2", "22"} <= set(texts)
    assert "1" not in texts  # 25 labels do not fit: every other one


def test_several_lines_share_round_ticks_a_legend_and_skip_missing_windows() -> None:
    labels = ["2012-07-01", "2012-07-08", "2012-07-15"]
    svg = charts.lines_svg(
        "Latency per window",
        labels,
        [charts.Series("median", [9.0, None, 10.0]), charts.Series("99th", [14.0, 14.0, 31.0])],
        "milliseconds",
    )
    root = _parse(svg)
    lines = list(root.iter(f"{SVG}polyline"))
    assert [len(_points(line)) for line in lines] == [2, 3]  # the missing value is skipped
    assert lines[0].attrib["stroke"] != lines[1].attrib["stroke"]
    assert "stroke-dasharray" in lines[1].attrib  # told apart in greyscale too
    tips = [c.find(f"{SVG}title").text for c in root.iter(f"{SVG}circle")]  # type: ignore[union-attr]
    assert tips[0] == "2012-07-01: median 9.00 milliseconds"
    assert len(tips) == 5
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"median", "99th", "milliseconds"} <= set(texts)  # legend and unit
    assert {"0", "10", "20", "30", "40"} <= set(texts)  # round ticks above the 31 ms
    # Pixels follow values: 31 ms stands higher than 14 ms, at 31/14 of its height.
    circles = [
        c for c in root.iter(f"{SVG}circle") if c.attrib["fill"] == lines[1].attrib["stroke"]
    ]
    base = next(
        float(g.attrib["y1"]) for g in root.iter(f"{SVG}line") if g.attrib["stroke"] == "#999"
    )
    heights = [base - float(c.attrib["cy"]) for c in circles]
    assert heights[2] / heights[0] == pytest.approx(31 / 14, rel=0.01)


def test_heatmap_colours_are_diverging_at_the_threshold_and_readable() -> None:
    def luminance(colour: str) -> float:
        """WCAG 2.1's relative luminance (https://www.w3.org/TR/WCAG21/#dfn-relative-luminance)."""
        srgb = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = ((c / 12.92) if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in srgb)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    at, _ = charts.ratio_colour(1.0)
    assert at == "#f7f7f7"  # the threshold itself: neutral
    below, above = charts.ratio_colour(1 / 8)[0], charts.ratio_colour(8.0)[0]
    assert int(below[5:7], 16) > int(below[1:3], 16)  # blue below the threshold
    assert int(above[1:3], 16) > int(above[5:7], 16)  # red above it
    assert charts.ratio_colour(100.0) == charts.ratio_colour(16.0)  # clipped at 16 times
    darker = [luminance(charts.ratio_colour(r)[0]) for r in (1.0, 2.0, 4.0, 8.0, 16.0)]
    assert darker == sorted(darker, reverse=True)  # further from the threshold: darker
    for ratio in [2 ** (e / 8) for e in range(-40, 41)] + [None]:
        background, ink = charts.ratio_colour(ratio)
        light, dark = sorted([luminance(background), luminance(ink)])
        assert (dark + 0.05) / (light + 0.05) >= 4.5  # WCAG AA contrast for the cell's text
    assert charts.ratio_colour(None)[0] == "#d9d9d9"
    assert "≥ 16" in charts.ratio_legend_html()
