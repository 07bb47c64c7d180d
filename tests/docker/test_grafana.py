"""Grafana's provisioning, proved against the real PostgreSQL after a real monitoring backfill.

There is no Grafana server here, so its SQL macros are expanded the way its PostgreSQL
datasource documents them; everything else is real: the dashboards' and alert rules' SQL
runs on 127.0.0.1:5432 against the ``monitoring_metrics`` table the monitoring job filled.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import typing as T

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from bikes.jobs.monitoring import MonitoringJob
from tests.conftest import REPO, postgres_database

GRAFANA = REPO / "docker" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
ALERT_RULES = GRAFANA / "provisioning" / "alerting" / "rules.yaml"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
START, END = dt.datetime(2012, 7, 1), dt.datetime(2013, 1, 1)


def expand_macros(
    sql: str, start: dt.datetime, end: dt.datetime, variables: dict[str, list[str] | str]
) -> str:
    """Grafana's PostgreSQL macros and template variables, as Grafana expands them: a
    multi-value variable (a list) as quoted literals joined by commas, a single-value one (a
    string) as its bare text, quotes doubled. Anything left starting with ``$`` is a macro this
    test does not know: it fails."""
    since, until = (t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in (start, end))
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        lambda m: f"{m[1].strip()} BETWEEN '{since}' AND '{until}'",
        sql,
    )
    sql = sql.replace("$__timeFrom()", f"'{since}'").replace("$__timeTo()", f"'{until}'")
    sql = re.sub(r"\$__time\(([^)]+)\)", lambda m: f'{m[1].strip()} AS "time"', sql)
    for name, values in variables.items():
        if isinstance(values, str):
            text = values.replace("'", "''")
        else:
            text = ",".join("'" + value.replace("'", "''") + "'" for value in values)
        sql = re.sub(rf"\$\{{{name}\}}|\${name}\b", lambda _match, value=text: value, sql)
    assert "$" not in sql, f"unexpanded macro or variable in: {sql}"
    return sql


def _dashboard(name: str) -> dict[str, T.Any]:
    return T.cast(dict[str, T.Any], json.loads((GRAFANA / "dashboards" / name).read_text()))


def _sql_targets() -> list[tuple[str, str, dict[str, T.Any]]]:
    """Every PostgreSQL query of every panel: (dashboard, panel title, target)."""
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["uid"] == "bikes-postgres":
                    found.append((path.name, panel["title"], target))
    return found


def _shop_table(rows: int, seed: int) -> pd.DataFrame:
    """A second model's table, not bikes: a classification with a string feature."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, rows)
    colour = rng.choice(["blue", "green", "red"], rows)
    return pd.DataFrame(
        {
            "seen_at": dt.datetime(2012, 12, 20) + pd.to_timedelta(np.arange(rows), unit="min"),
            "x": x,
            "colour": colour,
            "bought": np.where(x + rng.normal(0, 0.7, rows) > 0, "yes", "no"),
            "prediction": np.where(x > 0, "yes", "no"),
        }
    )


_BACKFILL: dict[str, T.Any] = {}  # the bikes backfill's results JSON, as the job returned it


def _degradations() -> list[float]:
    """The watched metric's change against the reference per week, from the job's own JSON."""
    return [window["performance"]["degradation"] for window in _BACKFILL["windows"]]


@pytest.fixture(scope="module")
def metrics_database(
    production_store: str, services: dict[str, T.Any], tmp_path_factory: pytest.TempPathFactory
) -> T.Iterator[sa.Engine]:
    """A database of its own on the real PostgreSQL, filled by a weekly monitoring backfill of
    the bike model and one window of a second model, ``shop`` (a classifier), sharing it."""
    with postgres_database("bikes_grafana") as uri:
        work = tmp_path_factory.mktemp("grafana")
        _shop_table(2000, 1).to_parquet(work / "reference.parquet")
        _shop_table(1000, 2).to_parquet(work / "current.parquet")
        shop = MonitoringJob.model_validate(
            {
                "registered_model": "shop",
                "contract": {"task": "classification", "target": "bought", "timestamp": "seen_at"},
                "reference": {"KIND": "ParquetReader", "path": str(work / "reference.parquet")},
                "current": {"KIND": "ParquetReader", "path": str(work / "current.parquet")},
                "metrics_store_uri": uri,
                "results_path": str(work / "shop.json"),
                "report_path": str(work / "shop.html"),
                "channels": [],
                **services,
            }
        )
        with shop:
            shop.run()
        job = MonitoringJob.model_validate(
            {
                "current": {
                    "KIND": "StoreReader",
                    "uri": production_store,
                    "start": START.isoformat(),
                    "end": END.isoformat(),
                    "step": "7D",
                },
                "metrics_store_uri": uri,
                "results_path": str(work / "monitoring.json"),
                "report_path": str(work / "monitoring.html"),
                "channels": [],
                **services,
            }
        )
        with job:
            _BACKFILL.update(job.run()["results"])
        engine = sa.create_engine(uri)
        try:
            yield engine
        finally:
            engine.dispose()


def _run(engine: sa.Engine, sql: str) -> tuple[list[str], list[tuple[T.Any, ...]]]:
    with engine.connect() as connection:
        result = connection.execute(sa.text(sql.replace(":", r"\:")))
        return list(result.keys()), [tuple(row) for row in result]


def _variables(engine: sa.Engine, model: str) -> dict[str, list[str] | str]:
    """The dashboard's template variables as Grafana fills them: ``model`` chosen (a single
    value), then every value of the others (``All``), from their own queries."""
    found: dict[str, list[str] | str] = {}
    for variable in _dashboard("bikes-monitoring.json")["templating"]["list"]:
        sql = expand_macros(variable["query"], START, END, {"model": model})
        _, rows = _run(engine, sql)
        values = [row[0] for row in rows]
        if variable["multi"]:
            found[variable["name"]] = values
        else:
            assert model in values, variable["name"]
            found[variable["name"]] = model
    return found


def test_the_provisioning_is_consistent() -> None:
    sources = {s["uid"]: s for s in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    assert sources["bikes-postgres"]["jsonData"]["database"] == "bikes"
    assert sources["bikes-postgres"]["secureJsonData"]["password"].startswith("$")  # from env
    assert {d.name for d in DASHBOARDS} == {"bikes-monitoring.json", "bikes-service.json"}
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in board["panels"]:
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in sources, panel["title"]
    rules = yaml.safe_load(ALERT_RULES.read_text())["groups"][0]["rules"]
    for rule in rules:
        queried = {d["datasourceUid"] for d in rule["data"]} - {"__expr__"}
        assert queried <= set(sources), rule["title"]


def test_every_dashboard_query_runs_on_the_backfilled_table(metrics_database: sa.Engine) -> None:
    variables = _variables(metrics_database, "bikes")
    assert variables["model"] == "bikes"
    assert {"temp", "hum", "yr", "season"} <= set(variables["column"])
    assert "colour" not in variables["column"]  # the other model's feature
    assert variables["metric"] == ["mae", "mape", "r2", "rmse"]
    results = {}
    for board, title, target in _sql_targets():
        sql = expand_macros(target["rawSql"], START, END, variables)
        names, rows = _run(metrics_database, sql)
        assert rows, f"{board} / {title}: no rows"
        if target["format"] == "time_series":
            assert names[0] == "time", f"{board} / {title}: first column {names[0]}"
            times = [row[0] for row in rows]
            assert times == sorted(times), f"{board} / {title}: not ordered by time"
            assert all(isinstance(row[-1], float) for row in rows), f"{board} / {title}"
        results[(title, target["refId"])] = (names, rows)
    drift_names, drift_rows = results[("Drift score per column ($column)", "A")]
    assert drift_names == ["time", "metric", "value"]
    weeks = {row[0] for row in drift_rows}
    assert len(weeks) == 27  # 2012-07-01 .. 2013-01-01 in steps of 7 days
    yr = [value for _, metric, value in drift_rows if metric == "yr"]
    assert len(yr) == len(weeks)
    assert min(yr) > 0.1
    threshold = results[("Drift score per column ($column)", "B")][1]
    assert {row[2] for row in threshold} == {0.1}
    status = results[("Status (0 no detection, 1 potential, 2 detected, 3 no data)", "A")][1]
    assert max(row[1] for row in status) == 2.0
    segments = {row[1] for row in results[("Watched metric per segment", "A")][1]}
    assert {"season=3", "workingday=1"} <= segments
    performance = "Performance metrics ($metric), current and reference"
    assert {row[1] for row in results[(performance, "A")][1]} == {"mae", "mape", "r2", "rmse"}
    assert "reference rmse" in {row[1] for row in results[(performance, "B")][1]}
    worse = results[("Watched metric: change against the reference (positive = worse)", "A")][1]
    assert {row[1] for row in worse} == {"rmse worse by"}
    # The session's champion was never gated: its reference is training's held-out part, whose
    # model never saw 2012 (pessimistic), so the weeks need not read worse. What the dashboard
    # draws is what the job decided, week by week.
    assert [row[2] for row in worse] == pytest.approx(_degradations())
    rejected = results[("Rows rejected by the service", "A")][1]
    assert len(rejected) == 27
    latest = results[("Latest window, every check", "A")]
    assert latest[0][:3] == ["check", "column", "value"]
    assert "f1" not in {row[1] for row in latest[1]}


def test_a_second_model_shares_the_table_and_reads_its_own_rows(
    metrics_database: sa.Engine,
) -> None:
    variables = _variables(metrics_database, "shop")
    assert variables["column"] == ["colour", "x"]
    assert variables["metric"] == ["accuracy", "f1", "precision", "recall"]
    answered = 0
    for _, title, target in _sql_targets():
        sql = expand_macros(target["rawSql"], START, END, variables)
        _, rows = _run(metrics_database, sql)
        answered += bool(rows)
        if title.startswith("Drift score per column") and target["refId"] == "A":
            assert {row[1] for row in rows} == {"colour", "x"}
        if title == "Latest window, every check":
            assert ("performance", "f1") in {(row[0], row[1]) for row in rows}
    assert answered >= 10


def test_alert_rules_fire_as_the_job_decided(metrics_database: sa.Engine) -> None:
    """Each rule's SQL, reduced to its last value and compared like Grafana's threshold."""
    """Each rule's SQL, one series per ``model_name`` (an alert instance each, as Grafana
    splits long-format results by their text columns), reduced to its last value and compared
    like Grafana's threshold."""
    rules = yaml.safe_load(ALERT_RULES.read_text())["groups"][0]["rules"]
    compare = {"gt": lambda a, b: a > b, "lt": lambda a, b: a < b}
    firing: dict[tuple[str, str], bool] = {}
    values: dict[tuple[str, str], float] = {}
    for rule in rules:
        query = next(d for d in rule["data"] if d["refId"] == "A")
        if query["datasourceUid"] != "bikes-postgres":
            continue
        sql = expand_macros(query["model"]["rawSql"], START, END, {})
        names, rows = _run(metrics_database, sql)
        assert names == ["time", "model_name", "value"], rule["title"]
        assert rows, rule["title"]
        condition = next(d for d in rule["data"] if d["refId"] == rule["condition"])
        evaluator = condition["model"]["conditions"][0]["evaluator"]
        last = {model: value for _, model, value in rows}  # ordered by time
        for model, value in last.items():
            firing[(rule["uid"], model)] = compare[evaluator["type"]](value, evaluator["params"][0])
            values[(rule["uid"], model)] = float(value)
    assert firing[("bikes-status-detected", "bikes")]
    last = _BACKFILL["windows"][-1]["performance"]
    assert values[("bikes-performance-degraded", "bikes")] == float(last["degraded"])
    assert firing[("bikes-performance-degraded", "bikes")] == last["degraded"]
    assert firing[("bikes-prediction-drift", "bikes")]
    assert not firing[("bikes-label-coverage", "bikes")]  # 80% of the production rows labelled
    assert not firing[("bikes-rejected-rows", "bikes")]  # nothing was rejected
    assert not firing[("bikes-status-detected", "shop")]  # the same distribution twice
    assert not firing[("bikes-performance-degraded", "shop")]


def test_unknown_macros_are_caught() -> None:
    with pytest.raises(AssertionError, match="unexpanded"):
        expand_macros("SELECT $__timeGroup(t, '1h')", START, END, {})
    expanded = expand_macros(
        "WHERE $__timeFilter(t) AND c IN ($column) AND m = '$model'",
        START,
        END,
        {"column": ["a", "o'b"], "model": "x'y"},
    )
    assert expanded == (
        "WHERE t BETWEEN '2012-07-01T00:00:00Z' AND '2013-01-01T00:00:00Z' AND c IN ('a','o''b')"
        " AND m = 'x''y'"
    )
