"""Pandera validation with errors a person can act on.

The schemas themselves are built from the data contract (``bikes.core.contract``); this module
runs them lazily, so one error lists every failing column with a few failing rows.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from bikes.core.errors import SchemaError

MAX_ROWS_IN_MESSAGE = 5


def validate(frame: pd.DataFrame, schema: pa.DataFrameSchema, source: str) -> pd.DataFrame:
    """Validate lazily, so one error lists every failing column, each with a few failing rows."""
    try:
        return schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as error:
        raise SchemaError(describe_failures(error.failure_cases, schema.name, source)) from None


def describe_failures(failure_cases: pd.DataFrame, schema_name: str | None, source: str) -> str:
    """Turn pandera's failure table into a message a person can act on."""
    lines: list[str] = []
    missing = failure_cases[failure_cases["check"] == "column_in_dataframe"]
    if not missing.empty:
        names = ", ".join(sorted(str(case) for case in missing["failure_case"]))
        lines.append(f"  - missing column(s): {names}")
    present = failure_cases[failure_cases["check"] != "column_in_dataframe"]
    # A value that cannot be coerced also fails the dtype check after it: say it once.
    coerced = set(
        present.loc[present["check"].astype(str).str.startswith("coerce_dtype("), "column"]
    )
    present = present[
        ~(present["column"].isin(coerced) & present["check"].astype(str).str.startswith("dtype("))
    ]
    for (column, check), cases in present.groupby(["column", "check"], sort=True, dropna=False):
        with_rows = cases[cases["index"].notna()]
        if with_rows.empty:
            first = cases["failure_case"].iloc[0]
            if str(check).startswith("dtype("):
                lines.append(f"  - {column}: expected {check}, got {first}")
            # Otherwise a check that could not run (a range check on strings, say): it only
            # repeats the dtype problem, unless it is the column's only failure.
            elif len(present[present["column"] == column]) == len(cases):
                lines.append(f"  - {column}: {check} could not run: {first}")
            continue
        examples = ", ".join(
            f"row {row}: {value!r}"
            for row, value in zip(
                with_rows["index"].head(MAX_ROWS_IN_MESSAGE),
                with_rows["failure_case"].head(MAX_ROWS_IN_MESSAGE),
                strict=True,
            )
        )
        more = len(with_rows) - MAX_ROWS_IN_MESSAGE
        suffix = f" and {more} more" if more > 0 else ""
        lines.append(
            f"  - {column}: {check} failed on {len(with_rows)} row(s) ({examples}{suffix})"
        )
    columns = sorted(
        {str(case) for case in missing["failure_case"]} | {str(c) for c in present["column"]}
    )
    header = f"{source}: {schema_name or 'data'} schema violated in column(s) {', '.join(columns)}:"
    return "\n".join([header, *lines])
