"""Tables as text, for a terminal and for the text files of a run.

One renderer, ``text_table``, writes any table: numbers to 4 significant figures and
right-aligned, missing values blank. Given a ``width`` (a run's log: 100 columns) it fits the
table into it by shortening text columns and then dropping columns from the right, naming them;
without one (``gate/verdict.txt``) it writes every column and every text whole. The gate's
verdicts have their own view for the log (``verdict_lines``): the interval as one column, what
failed in words below. Presentation lives here, at the edge: ``core.gate`` only judges.
"""

from __future__ import annotations

import math
import textwrap
import typing as T

import numpy as np
import pandas as pd

CONSOLE_WIDTH = 100  # a run's log should read in a terminal; the files keep every column
MIN_TEXT_WIDTH = 12  # a shortened text column keeps at least this many characters


def text_table(
    table: pd.DataFrame,
    width: int | None = CONSOLE_WIDTH,
    shrink: T.Sequence[str] = (),
    elsewhere: str = "",
) -> str:
    """``table`` as aligned text. ``width=None``: every column, every cell whole (a file).
    Otherwise no line is wider than ``width``: the widest of the ``shrink`` columns is cut
    short with an ellipsis, down to ``MIN_TEXT_WIDTH``, then columns are dropped from the
    right (named in a last line, with ``elsewhere``: where they are), and a single column left
    is cut to ``width``."""
    cells = {str(name): [_cell(value) for value in table[name]] for name in table.columns}
    widths = {name: max([len(name), *map(len, column)]) for name, column in cells.items()}
    dropped = [] if width is None else _fit_widths(widths, width, shrink)
    numeric = {str(n) for n in table.columns if _numeric(table[n])}

    def line(values: dict[str, str]) -> str:
        parts = [
            _fit(values[n], w).rjust(w) if n in numeric else _fit(values[n], w).ljust(w)
            for n, w in widths.items()
        ]
        return "  ".join(parts).rstrip()

    rows = [line({n: n for n in widths})]
    rows += [line({n: cells[n][i] for n in widths}) for i in range(len(table))]
    if dropped and width is not None:
        rows.append(_fit(f"(not shown: {', '.join(dropped)}{elsewhere})", width))
    return "\n".join(rows)


def verdict_lines(table: pd.DataFrame, width: int = CONSOLE_WIDTH) -> str:
    """The gate's verdict table (``gate.Decision.table()``) as a person reads it in a log: one
    line per check, the interval as ``low .. high``, then what failed in words (wrapped), all
    within ``width`` columns. The full table (every column, whole reasons) is the run's
    ``gate/verdict.json`` and ``.txt``."""
    if table.empty:
        return "(no checks)"
    shown = pd.DataFrame(
        {
            "metric": table["metric"],
            "check": table["check"],
            "candidate": table["candidate"],
            "baseline": table["baseline"],
            "change": table["change"],
            "interval": [
                _interval(low, high)
                for low, high in zip(table["interval_low"], table["interval_high"], strict=True)
            ],
            "verdict": table["verdict"],
            "threshold": [
                _threshold(threshold, margin)
                for threshold, margin in zip(table["threshold"], table["margin"], strict=True)
            ],
        }
    )
    if shown["baseline"].isna().all():  # a first deploy: nothing to compare against
        shown = shown.drop(columns=["baseline", "change", "interval"])
    lines = [text_table(shown, width, ("threshold",), "; every column: gate/verdict.txt")]
    failed = table.loc[table["verdict"] != "passed", "reason"]
    lines += [
        textwrap.fill(str(reason), width, initial_indent="  failed: ", subsequent_indent="    ")
        for reason in failed
    ]
    return "\n".join(lines)


def _fit_widths(widths: dict[str, int], width: int, shrink: T.Sequence[str]) -> list[str]:
    """Narrow ``widths`` in place to fit ``width``; the names of the columns dropped."""

    def total() -> int:
        return sum(widths.values()) + 2 * (len(widths) - 1)

    def floor(name: str) -> int:
        return max(len(name), MIN_TEXT_WIDTH)

    while total() > width:
        shrinkable = [n for n in shrink if n in widths and widths[n] > floor(n)]
        if not shrinkable:
            break
        name = max(shrinkable, key=lambda n: widths[n])
        widths[name] = max(floor(name), widths[name] - (total() - width))
    dropped: list[str] = []
    while total() > width and len(widths) > 1:
        dropped.insert(0, widths.popitem()[0])
    if total() > width:
        (only,) = widths
        widths[only] = width
    return dropped


def _numeric(column: pd.Series) -> bool:
    """Numbers (missing ones aside), right-aligned: an object column of floats and Nones too."""
    values = [v for v in column if not (v is None or (isinstance(v, float) and math.isnan(v)))]
    return bool(values) and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
        for v in values
    )


def _cell(value: T.Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _interval(low: T.Any, high: T.Any) -> str:
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return ""
    return f"{low:+.3g} .. {high:+.3g}"


def _threshold(threshold: T.Any, margin: T.Any) -> str:
    """The check's bound in short: "than baseline" is what every comparison is against."""
    text = str(threshold).replace(" than baseline", "")
    if margin is not None and not pd.isna(margin):
        text = f"{text} (margin {margin:.3g})"
    return text
