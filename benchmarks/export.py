"""The export job against the store's own read of the same rows, and its memory by size.

For each size, a SQLite capture store of N bike predictions (12 features, half labelled)
spread over 20 event dates; each case runs in a fresh process and reports its wall time and
peak resident memory:

- reference: ``Store.read()`` of every row, as monitoring reads a store window today;
- export: ``bikes.jobs.export.ExportJob`` into an empty lake (chunks of ``--chunk`` rows);
- rerun: the export again with nothing new (the fingerprint aggregate only).

    uv run python benchmarks/export.py --rows 100000 400000 --repeat 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

CASE = r"""
import json, resource, sys, time
from bikes.io.store import Store
from bikes.jobs.export import ExportJob
from bikes.io.services import LoggerService
kind, uri, lake, chunk = sys.argv[1:5]
start = time.perf_counter()
if kind == "reference":
    rows = len(Store(uri).read())
else:
    job = ExportJob(store_uri=uri, lake=lake, chunk_rows=int(chunk),
                    logger_service=LoggerService(level="ERROR"))
    with job:
        rows = job.run()["rows"]
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak, "rows": rows}))
"""


def _fill(path: Path, rows: int) -> str:
    from bikes.io.store import Store

    uri = f"sqlite:///{path}"
    store = Store(uri)
    store.create()
    rng = random.Random(7)
    first = dt.datetime(2012, 7, 1)
    batch: list[dict[str, object]] = []
    labels: list[dict[str, object]] = []
    for n in range(rows):
        event = first + dt.timedelta(seconds=n * 20 * 86400 / rows)
        ident = uuid.uuid4().hex
        batch.append(
            {
                "prediction_id": ident,
                "event_time": event,
                "received_time": event,
                "model_name": "bikes",
                "model_version": "1",
                "latency_ms": rng.random(),
                "inputs": {
                    "season": 3,
                    "yr": 1,
                    "mnth": 7,
                    "hr": event.hour,
                    "holiday": 0,
                    "weekday": event.weekday(),
                    "workingday": 1,
                    "weathersit": rng.randint(1, 3),
                    "temp": rng.random(),
                    "atemp": rng.random(),
                    "hum": rng.random(),
                    "windspeed": rng.random(),
                },
                "prediction": rng.random() * 500,
            }
        )
        if n % 2 == 0:
            labels.append({"prediction_id": ident, "label_time": event, "target": 100.5})
        if len(batch) == 20_000:
            store.write_predictions(batch)
            store.write_labels(labels)
            batch, labels = [], []
    store.write_predictions(batch)
    store.write_labels(labels)
    store.dispose()
    return uri


def _run(kind: str, uri: str, lake: Path, chunk: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CASE, kind, uri, str(lake), str(chunk)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 400_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=50_000)
    options = parser.parse_args()
    print("| rows | case | median s | ratio to reference | peak MB |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for rows in options.rows:
        with tempfile.TemporaryDirectory() as folder:
            uri = _fill(Path(folder) / "p.db", rows)
            runs: dict[str, list[dict[str, float]]] = {"reference": [], "export": [], "rerun": []}
            for attempt in range(options.repeat):
                lake = Path(folder) / f"lake-{attempt}"
                runs["reference"].append(_run("reference", uri, lake, options.chunk))
                runs["export"].append(_run("export", uri, lake, options.chunk))
                runs["rerun"].append(_run("export", uri, lake, options.chunk))
            base = statistics.median(r["seconds"] for r in runs["reference"])
            for case, results in runs.items():
                seconds = statistics.median(r["seconds"] for r in results)
                peak = statistics.median(r["peak_mb"] for r in results)
                print(f"| {rows:,} | {case} | {seconds:.2f} | {seconds / base:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
