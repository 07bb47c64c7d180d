"""Fixtures of the fault-injection suite: a private PostgreSQL, the request batch the load
sends, and spool folders that fill up or turn read-only on demand."""

from __future__ import annotations

import typing as T
from pathlib import Path

import pandas as pd
import pytest

from tests.faults.postgres import PrivatePostgres
from tests.faults.spool import SpoolFolder
from tests.serving.test_app import _records, free_port

ROWS_PER_REQUEST = 8


@pytest.fixture
def private_postgres() -> T.Iterator[PrivatePostgres]:
    """A fresh cluster of the test's own, running; stopped and deleted whatever happens."""
    database = PrivatePostgres(free_port())
    try:
        database.init()
        database.start()
        yield database
    finally:
        database.remove()


@pytest.fixture
def payload(test_frame: pd.DataFrame) -> dict[str, T.Any]:
    """One /invocations body: real rows of the test split."""
    return {"dataframe_records": _records(test_frame.head(ROWS_PER_REQUEST))}


@pytest.fixture
def spool_folder(tmp_path: Path) -> T.Iterator[T.Callable[[str, int], SpoolFolder]]:
    """Make a ``SpoolFolder`` (``full`` or ``unwritable``); undone at teardown."""
    made: list[SpoolFolder] = []

    def make(fault: str, size: int = 0) -> SpoolFolder:
        folder = SpoolFolder(tmp_path / "spool", fault, size)
        made.append(folder)
        return folder

    yield make
    for folder in made:
        folder.close()
