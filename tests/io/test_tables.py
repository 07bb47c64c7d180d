"""Tables as text: the log's fit 100 columns and say what they left out, the files keep
every column and every word."""

from __future__ import annotations

import pandas as pd

from bikes.io import tables

REASON = "root_mean_squared_error: up to 144.2 worse than the baseline " + "x " * 80
ROW = {
    "metric": "root_mean_squared_error",
    "check": "non_inferiority",
    "candidate": 191.41234,
    "baseline": 55.3612,
    "threshold": "at most 5.0% worse than baseline " + "and more " * 10,
    "change": 136.05,
    "interval_low": 128.8,
    "interval_high": 144.2,
    "margin": 2.768,
    "verdict": "failed",
    "reason": REASON,
}


def test_the_console_verdicts_keep_names_whole_and_cut_only_what_the_files_keep() -> None:
    """A hand-made table wider than any terminal: metric names stay whole, numbers are not
    cut, the threshold column goes first, and a long reason wraps instead of running on."""
    text = tables.verdict_lines(pd.DataFrame([ROW, {**ROW, "metric": "r2_score"}]))
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    assert lines[1].split()[:6] == [
        "root_mean_squared_error",
        "non_inferiority",
        "191.4",
        "55.36",
        "136.1",
        "+129",
    ]
    assert lines[2].startswith("r2_score ")
    assert lines[3] == "(not shown: threshold; every column: gate/verdict.txt)"
    wrapped = " ".join(line.strip() for line in lines[4:]).replace("failed: ", "")
    assert wrapped.split() == (REASON + " " + REASON).split()


def test_a_file_table_keeps_every_column_and_every_word() -> None:
    """The same rows for ``gate/verdict.txt``: no width, so nothing cut, dropped or wrapped;
    numbers to four figures, right-aligned under their names; a missing value blank."""
    frame = pd.DataFrame([ROW, {**ROW, "metric": "r2_score", "baseline": None}])
    lines = tables.text_table(frame, width=None).splitlines()
    assert lines[0].split() == list(ROW)
    assert len(lines) == 3
    assert lines[1].rstrip().endswith(REASON.rstrip())
    assert "…" not in "".join(lines)
    header, first, second = lines
    end = header.index("baseline") + len("baseline")
    assert first[:end].endswith("55.36")  # right-aligned under its name
    assert second[:end].rstrip() == second[: header.index("baseline")].rstrip()  # blank


def test_a_narrow_table_shortens_text_then_drops_columns_from_the_right() -> None:
    frame = pd.DataFrame(
        {"segment": ["weathersit"] * 2, "value": ["x" * 60, "y"], "rows": [10, 2_000]}
    )
    shortened = tables.text_table(frame, width=40, shrink=("value",)).splitlines()
    assert max(map(len, shortened)) <= 40
    assert shortened[1].split()[1].endswith("…")  # the long text cut, its row kept
    assert shortened[2].split() == ["weathersit", "y", "2000"]  # every column still there
    dropped = tables.text_table(frame, width=30, elsewhere=" (see the file)").splitlines()
    assert max(map(len, dropped)) <= 30
    assert dropped[0].split() == ["segment"]
    assert dropped[-1] == "(not shown: value, rows (see …"  # the note cut to the width too
