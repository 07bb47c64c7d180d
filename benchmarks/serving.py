"""Cost of capture: the same service with capture on and off, under one bounded loopback load.

Two serving processes (``capture: true`` into SQLite, ``capture: false``) serve the same model;
for each batch size and concurrency level a fixed number of requests goes to each, in turn.
Prints throughput and p50/p99 latency per case, the p50 ratio on/off, and, after SIGTERM,
rows stored against rows acknowledged (they must be equal).

    uv run python benchmarks/serving.py --requests 400
"""

from __future__ import annotations

import argparse
import concurrent.futures
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from _workspace import REPO, bikes, clean_environment, prepare
from bikes.io.contracts import load_contract
from bikes.io.store import Store


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    work: Path, env: dict[str, str], capture: bool
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "bikes",
        str(REPO / "confs" / "serving.yaml"),
        "-e",
        f"job.port={port}",
        "-e",
        f"job.capture={str(capture).lower()}",
        "-e",
        "job.logger_service.level=WARNING",
    ]
    server = subprocess.Popen(command, cwd=work, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not start") from None
            time.sleep(0.2)


def load(
    url: str, payload: dict[str, object], requests: int, concurrency: int
) -> tuple[np.ndarray, float, int]:
    """Fire a fixed number of requests; returns latencies (s), wall time (s), rows acknowledged."""
    latencies: list[float] = []
    acknowledged = 0

    def one(client: httpx.Client) -> tuple[float, int]:
        start = time.perf_counter()
        response = client.post("/invocations", json=payload)
        elapsed = time.perf_counter() - start
        response.raise_for_status()
        return elapsed, len(response.json()["prediction_ids"])

    clients = [httpx.Client(base_url=url, timeout=60) for _ in range(concurrency)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(one, clients[i % concurrency]) for i in range(requests)]
        for future in futures:
            latency, rows = future.result()
            latencies.append(latency)
            acknowledged += rows
    wall = time.perf_counter() - start
    for client in clients:
        client.close()
    return np.asarray(latencies), wall, acknowledged


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--requests", type=int, default=400)
    args = cli.parse_args()
    env = clean_environment()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        test = prepare(work, env) / "test.parquet"
        bikes(
            ["confs/training.yaml", "-e", "job.alias=champion", "-e", "job.validation_share=0"],
            work,
            env,
        )
        frame = pd.read_parquet(test)
        contract = load_contract(str(REPO / "confs" / "bikes-contract.yaml"))
        timestamp = str(contract.timestamp)
        rows = frame.loc[:, [timestamp, *contract.feature_names]].copy()
        rows[timestamp] = rows[timestamp].dt.strftime("%Y-%m-%dT%H:%M:%S")
        records = rows.to_dict(orient="records")
        servers = {capture: start_server(work, env, capture) for capture in (True, False)}
        acknowledged_with_capture = 0
        header = ("batch", "conc", "capture", "req/s", "rows/s", "p50 ms", "p99 ms", "p50 on/off")
        widths = (5, 4, 7, 8, 8, 8, 8, 10)
        print(" ".join(f"{name:>{width}}" for name, width in zip(header, widths, strict=True)))
        for batch in (1, 32):
            payload = {"dataframe_records": records[:batch]}
            for concurrency in (1, 4, 16):
                p50 = {}
                for capture in (False, True):
                    _, url = servers[capture]
                    load(url, payload, 20, concurrency)  # warm up
                    latencies, wall, acknowledged = load(url, payload, args.requests, concurrency)
                    if capture:
                        acknowledged_with_capture += acknowledged + 20 * batch
                    p50[capture] = float(np.percentile(latencies, 50)) * 1000
                    p99 = float(np.percentile(latencies, 99)) * 1000
                    ratio = f"{p50[True] / p50[False]:>10.2f}" if capture else ""
                    print(
                        f"{batch:>5} {concurrency:>4} {'on' if capture else 'off':>7} "
                        f"{args.requests / wall:>8.0f} {args.requests * batch / wall:>8.0f} "
                        f"{p50[capture]:>8.2f} {p99:>8.2f} {ratio}"
                    )
        for server, _ in servers.values():
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=120)
        stored = Store(f"sqlite:///{work / 'predictions.db'}").count()
        print(f"\nrows acknowledged with capture on: {acknowledged_with_capture}")
        print(f"rows stored: {stored}")
        if stored != acknowledged_with_capture:
            raise SystemExit("capture lost or duplicated rows")


if __name__ == "__main__":
    main()
