"""A ``200`` with prediction ids means the rows are kept: tried as a hostile operator would.

Every test runs the real serving job (``bikes confs/serving.yaml``) under real load from
client threads, does something bad to it (``kill -9``, a crashed database, a full or
read-only spool folder, a corrupt spool), then counts the acknowledged ids against the store:
0 lost, 0 duplicated. The counts are printed (``pytest -s``) and in every assertion message.
"""

from __future__ import annotations

import typing as T
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.faults.harness import Counts, Load, Service, count, report, stored_ids, wait_for
from tests.faults.postgres import PrivatePostgres
from tests.faults.spool import SpoolFolder
from tests.serving.test_app import free_port

pytestmark = pytest.mark.faults

KILL_ROUNDS = 3
ROWS_PER_ROUND = 200  # acknowledged between two faults: the fault lands under load
SPOOL = "predictions.spool.jsonl"
SPOOL_LIMIT = 256 * 1024  # bytes: a few hundred rows, full within seconds of an outage


def _service(
    tmp_path: Path, services: dict[str, T.Any], store_uri: str, **kwargs: T.Any
) -> Service:
    spool = kwargs.pop("spool_path", tmp_path / "spool" / SPOOL)
    return Service(
        tmp_path,
        services["mlflow_service"].tracking_uri,
        free_port(),
        store_uri,
        spool,
        **kwargs,
    )


def _all_stored(ids: list[str], uri: str) -> T.Callable[[], bool]:
    """A condition: every id in ``ids`` is in the store (False while it is unreachable)."""
    wanted = set(ids)

    def check() -> bool:
        try:
            return wanted <= set(stored_ids(uri))
        except sa.exc.SQLAlchemyError:  # the database still recovering: poll again
            return False

    return check


def _verdict(
    name: str, counts: Counts, code: int, service: Service, load: Load, **extra: T.Any
) -> str:
    line = report(name, counts, exit=code, statuses=load.snapshot()[1], **extra)
    return line + "\n--- service log (tail) ---\n" + service.logs()[-4000:]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_repeated_kill_9_under_load_loses_no_acknowledged_row(
    backend: str,
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    payload: dict[str, T.Any],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """kill -9 in the middle of load, three times, restarting on the same store and spool;
    then SIGTERM. Every id ever acknowledged is in the store, once."""
    if backend == "postgresql":
        uri = request.getfixturevalue("private_postgres").uri
    else:
        uri = f"sqlite:///{tmp_path / 'predictions.db'}"
    service = _service(tmp_path, services, uri)
    try:
        service.start()
        with Load(service.base, payload) as load:
            for _ in range(KILL_ROUNDS):
                load.wait_acknowledged(ROWS_PER_ROUND)
                service.kill()
                service.start()
            load.wait_acknowledged(ROWS_PER_ROUND)
            code = service.terminate()
    finally:
        service.close()
    counts = count(load.acknowledged, uri)
    line = _verdict(f"kill -9 x{KILL_ROUNDS} under load ({backend})", counts, code, service, load)
    assert counts.acknowledged >= (KILL_ROUNDS + 1) * ROWS_PER_ROUND, line
    assert (counts.lost, counts.duplicated) == (0, 0), line
    assert code == 0, line


def test_database_outage_under_load_replays_every_acknowledged_row(
    private_postgres: PrivatePostgres,
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    payload: dict[str, T.Any],
    tmp_path: Path,
) -> None:
    """The database crashes (pg_ctl stop -m immediate) under load; the service goes on
    acknowledging into its spool, says degraded, and replays once the database is back."""
    uri = private_postgres.uri
    service = _service(tmp_path, services, uri)
    statuses_seen: set[str] = set()

    def degraded() -> bool:
        statuses_seen.add(str(service.health()[1].get("status")))
        return "degraded" in statuses_seen

    try:
        service.start()
        with Load(service.base, payload) as load:
            load.wait_acknowledged(ROWS_PER_ROUND)
            private_postgres.crash()
            down_from = len(load.acknowledged_now())
            load.wait_acknowledged(2 * ROWS_PER_ROUND)  # acknowledged while it is down
            wait_for(degraded, 60, "/health saying degraded during the outage")
            during = len(load.acknowledged_now()) - down_from
            private_postgres.start()
            wait_for(
                _all_stored(load.acknowledged_now(), uri),
                120,
                "the rows acknowledged during the outage replayed into the store",
                poll=0.5,
            )
            load.wait_acknowledged(ROWS_PER_ROUND)  # and it serves on
            code = service.terminate()
    finally:
        service.close()
    counts = count(load.acknowledged, uri)
    line = _verdict("database outage under load", counts, code, service, load, during_outage=during)
    assert during >= 2 * ROWS_PER_ROUND, line
    assert (counts.lost, counts.duplicated) == (0, 0), line
    assert code == 0, line


@pytest.mark.parametrize("fault", ["full", "unwritable"])
def test_a_spool_that_cannot_keep_rows_during_an_outage_answers_503_never_200(
    fault: str,
    private_postgres: PrivatePostgres,
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    payload: dict[str, T.Any],
    spool_folder: T.Callable[[str, int], SpoolFolder],
    tmp_path: Path,
) -> None:
    """Database down and the spool full (or read-only): nowhere to keep a row, so new
    requests get 503 and /health says failing (503); once the database is back the service
    acknowledges again. Every row acknowledged before, during and after is in the store."""
    uri = private_postgres.uri
    folder = spool_folder(fault, SPOOL_LIMIT)
    service = _service(
        tmp_path, services, uri, spool_path=folder.path / SPOOL, prefix=folder.prefix
    )
    failing: list[tuple[int, T.Any]] = []

    def health_failing() -> bool:
        code, body = service.health()
        failing.append((code, body.get("status")))
        return (code, body.get("status")) == (503, "failing")

    try:
        service.start()
        assert service.process is not None
        folder.started(service.process.pid)
        with Load(service.base, payload) as load:
            load.wait_acknowledged(ROWS_PER_ROUND)
            folder.break_it()
            private_postgres.crash()
            load.wait_status(503, more=20, timeout=60)  # refused: it cannot keep them
            wait_for(health_failing, 60, f"/health answering 503 failing (saw {failing[-3:]})")
            refused_at = load.snapshot()
            private_postgres.start()
            load.wait_acknowledged(ROWS_PER_ROUND, timeout=120)  # it can keep rows again
            wait_for(
                _all_stored(load.acknowledged_now(), uri),
                120,
                "every acknowledged row in the store",
                poll=0.5,
            )
            code = service.terminate()
    finally:
        service.close()
    counts = count(load.acknowledged, uri)
    line = _verdict(
        f"{fault} spool during a database outage ({folder.how})",
        counts,
        code,
        service,
        load,
        acknowledged_when_refusing=refused_at[0],
    )
    assert (counts.lost, counts.duplicated) == (0, 0), line
    assert code == 0, line


BAD_LINES = [
    b'{"prediction_id": "0f0f0f0f", "event_time": "2012-12-0',  # truncated JSON
    b"\x00\xff\xfe garbage \x80\x81\xc3\x28",  # not UTF-8, not JSON
    b"[1, 2, 3]",  # JSON, not an object
    b'"a string"',
    b"17",
    b"null",
]


def test_corrupt_spool_lines_are_quarantined_and_the_good_ones_replayed(
    private_postgres: PrivatePostgres,
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    payload: dict[str, T.Any],
    tmp_path: Path,
) -> None:
    """A previous run spooled rows during an outage and stopped; its spool got damaged (bad
    lines between good ones, a torn last line). The next run starts, replays the good lines,
    moves the bad ones to a side file next to the spool and names it in the log."""
    uri = private_postgres.uri
    folder = tmp_path / "spool"
    folder.mkdir()
    spool = folder / SPOOL
    service = _service(tmp_path, services, uri, spool_path=spool)
    try:
        service.start()
        private_postgres.crash()
        with Load(service.base, payload) as load:
            load.wait_acknowledged(ROWS_PER_ROUND)
            first_exit = service.terminate()
        assert first_exit == 0, service.log()[-4000:]
        assert spool.exists(), f"nothing spooled by the first run:\n{service.log()[-4000:]}"
        good = [line for line in spool.read_bytes().splitlines(keepends=True) if line.strip()]
        middle = len(good) // 2
        torn = good[0][: len(good[0]) // 2]  # a last write cut short: no newline
        damaged = (
            [BAD_LINES[0] + b"\n", *good[:middle]]
            + [bad + b"\n" for bad in BAD_LINES[1:]]
            + [*good[middle:], torn]
        )
        spool.write_bytes(b"".join(damaged))
        private_postgres.start()
        service.start()
        acknowledged = load.acknowledged_now()
        wait_for(_all_stored(acknowledged, uri), 120, "the good spool lines replayed", poll=0.5)
        code = service.terminate()
    finally:
        service.close()
    counts = count(acknowledged, uri)
    side_files = [path for path in folder.iterdir() if path != spool]
    quarantined = [
        line for path in side_files for line in path.read_bytes().splitlines() if line.strip()
    ]
    line = _verdict(
        "corrupt spool lines",
        counts,
        code,
        service,
        load,
        good_lines=len(good),
        bad_lines=len(BAD_LINES) + 1,
        quarantined=len(quarantined),
        side_files=[path.name for path in side_files],
    )
    assert counts == Counts(len(good), len(good), 0, 0, 0), line
    assert counts.acknowledged == len(good), line
    assert code == 0, line
    assert len(quarantined) == len(BAD_LINES) + 1, line
    log = service.log()
    assert any(path.name in log for path in side_files), line
