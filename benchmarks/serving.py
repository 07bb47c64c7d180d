"""Cost of capture: the same service with capture on and off, under one bounded loopback load.

Serving processes of the same model: capture off, and capture on into SQLite in each mode
asked for (``durable``, the default: a request is answered once its rows are committed; and
optionally ``queued``: answered once queued). For each batch size and concurrency level a
fixed number of requests goes to each, in turn, ``--rounds`` times (latencies pooled over the
rounds, so a slow minute of a shared machine falls on every mode alike). Prints throughput and
p50/p99 latency per case, the p50 ratio on/off, and, after SIGTERM, rows stored against rows
acknowledged per mode (they must be equal).

    uv run python benchmarks/serving.py --requests 400
    uv run python benchmarks/serving.py --requests 400 --rounds 3 --modes durable queued
    uv run python benchmarks/serving.py --requests 100 --rounds 12 --modes off-b durable

At concurrency 1 the servers take turns request by request (``--requests`` x ``--rounds``
each), so a slow spell of the machine falls on every mode alike; at higher concurrency they
take turns round by round, ``--requests`` each (one server under load at a time).

Noise: ``off-b`` is a second capture-off server, an A/A check: its ratio to ``off`` is what
the method itself scatters by; with it, each capture mode's ratio is also given against both
capture-off servers' latencies pooled (in brackets), which halves what one baseline process
having a slow run can do to the ratio. On this 2-vCPU VM whole seconds run slower at random, so many
short rounds (``--requests 100 --rounds 12``) interleave the servers finely enough that a
slow spell falls on every mode alike; 400-request rounds let the A/A ratio stray to 1.2.
``--pin`` runs every server on the last CPU and the client on the others: the A/A ratio is
tighter, but work a server does beside its requests (SQLite checkpoints in the capture
writer's thread) then competes with them for one core, which is not how it is deployed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
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

OFF = "off"
OFF_B = "off-b"  # a second capture-off server: the A/A check of the method's own noise


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def capturing(mode: str) -> bool:
    return mode not in (OFF, OFF_B)


def start_server(
    work: Path,
    env: dict[str, str],
    mode: str,
    model_threads: str | None,
    cpus: set[int] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """A serving process: ``mode`` off (no capture), durable or queued; ``model_threads`` the
    job's setting (None: its default), the same for every mode; ``cpus``: the CPUs it may run
    on (None: any)."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "bikes",
        str(REPO / "confs" / "serving.yaml"),
        "-e",
        f"job.port={port}",
        "-e",
        f"job.capture={str(capturing(mode)).lower()}",
        "-e",
        "job.logger_service.level=WARNING",
    ]
    if model_threads is not None:
        command += ["-e", f"job.model_threads={model_threads}"]
    if capturing(mode):
        command += [
            "-e",
            f"job.acknowledge={mode}",
            "-e",
            f"job.store_uri=sqlite:///{work / f'predictions-{mode}.db'}",
            "-e",
            f"job.spool_path={work / f'spool-{mode}.jsonl'}",
        ]
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    server = subprocess.Popen(command, cwd=work, env=env, preexec_fn=pin)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=60).status_code == 200:
                return server, url
        except httpx.HTTPError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not start") from None
            time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux): what a request costs the server,
    less disturbed than wall time by other work on the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(
    url: str, payloads: list[dict[str, object]], requests: int, concurrency: int
) -> tuple[np.ndarray, float, int]:
    """Fire a fixed number of requests, the ``payloads`` in turn; returns latencies (s), wall
    time (s), rows acknowledged."""
    latencies: list[float] = []
    acknowledged = 0

    def one(client: httpx.Client, payload: dict[str, object]) -> tuple[float, int]:
        start = time.perf_counter()
        response = client.post("/invocations", json=payload)
        elapsed = time.perf_counter() - start
        response.raise_for_status()
        return elapsed, len(response.json()["prediction_ids"])

    clients = [httpx.Client(base_url=url, timeout=60) for _ in range(concurrency)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        futures = [
            pool.submit(one, clients[i % concurrency], payloads[i % len(payloads)])
            for i in range(requests)
        ]
        for future in futures:
            latency, rows = future.result()
            latencies.append(latency)
            acknowledged += rows
    wall = time.perf_counter() - start
    for client in clients:
        client.close()
    return np.asarray(latencies), wall, acknowledged


def alternate(
    urls: dict[str, str], payloads: list[dict[str, object]], requests: int
) -> dict[str, tuple[np.ndarray, float, int]]:
    """Concurrency 1, every server in turn request by request (the order rotating), so a slow
    spell of the machine falls on every mode alike; per mode: latencies (s), the wall time its
    requests took (s), rows acknowledged."""
    modes = list(urls)
    clients = {mode: httpx.Client(base_url=url, timeout=60) for mode, url in urls.items()}
    latencies: dict[str, list[float]] = {mode: [] for mode in modes}
    acknowledged = dict.fromkeys(modes, 0)
    try:
        for i in range(requests):
            payload = payloads[i % len(payloads)]
            for k in range(len(modes)):
                mode = modes[(i + k) % len(modes)]
                start = time.perf_counter()
                response = clients[mode].post("/invocations", json=payload)
                latencies[mode].append(time.perf_counter() - start)
                response.raise_for_status()
                acknowledged[mode] += len(response.json()["prediction_ids"])
    finally:
        for client in clients.values():
            client.close()
    return {
        mode: (np.asarray(latencies[mode]), float(np.sum(latencies[mode])), acknowledged[mode])
        for mode in modes
    }


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--requests", type=int, default=400, help="per case, mode and round")
    cli.add_argument("--rounds", type=int, default=1, help="interleaved repeats per case")
    cli.add_argument(
        "--modes",
        nargs="+",
        default=["durable"],
        choices=["durable", "queued", OFF_B],
        metavar="MODE",
        help="durable, queued, and off-b (a second capture-off server: the A/A check)",
    )
    cli.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="servers on the last CPU, the client on the others",
    )
    cli.add_argument(
        "--model-threads",
        default=None,
        metavar="N",
        help="the serving job's model_threads for every server (an integer or null); default: "
        "the job's default",
    )
    args = cli.parse_args()
    env = clean_environment()
    server_cpus: set[int] | None = None
    if args.pin:
        available = sorted(os.sched_getaffinity(0))
        server_cpus = {available[-1]}
        os.sched_setaffinity(0, available[:-1])  # the client, and the threads it starts
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
        modes = [OFF, *args.modes]
        servers = {
            mode: start_server(work, env, mode, args.model_threads, server_cpus) for mode in modes
        }
        captured = [mode for mode in args.modes if capturing(mode)]
        acknowledged_by = dict.fromkeys(captured, 0)
        header = (
            "batch",
            "conc",
            "capture",
            "req/s",
            "rows/s",
            "p50 ms",
            "p99 ms",
            "p50 on/off",
            "cpu ms/req",
        )
        widths = (5, 4, 7, 8, 8, 8, 8, 17, 10)
        print(" ".join(f"{name:>{width}}" for name, width in zip(header, widths, strict=True)))
        for batch in (1, 32):
            # The test split in order, a batch of consecutive hours per request, as a live
            # service sees them (one batch sent again and again would pile every row onto the
            # same 32 event times, a needless worst case for the store's event-time index).
            payloads: list[dict[str, object]] = [
                {"dataframe_records": records[start : start + batch]}
                for start in range(0, len(records) - batch + 1, batch)
            ]
            for concurrency in (1, 4, 16):
                latencies: dict[str, list[np.ndarray]] = {mode: [] for mode in modes}
                walls = dict.fromkeys(modes, 0.0)
                cpu = dict.fromkeys(modes, 0.0)
                for _ in range(args.rounds if concurrency > 1 else 0):
                    for mode in modes:
                        server, url = servers[mode]
                        _, _, warm = load(url, payloads, 20, concurrency)  # warm up
                        before = cpu_seconds(server.pid)
                        timed, wall, acknowledged = load(url, payloads, args.requests, concurrency)
                        cpu[mode] += cpu_seconds(server.pid) - before
                        if capturing(mode):
                            acknowledged_by[mode] += acknowledged + warm
                        latencies[mode].append(timed)
                        walls[mode] += wall
                if concurrency == 1:  # one request at a time: the servers take turns
                    for mode in modes:  # warm up
                        warm = load(servers[mode][1], payloads, 20, 1)[2]
                        if capturing(mode):
                            acknowledged_by[mode] += warm
                    before = {mode: cpu_seconds(servers[mode][0].pid) for mode in modes}
                    turns = alternate(
                        {mode: url for mode, (_, url) in servers.items()},
                        payloads,
                        args.requests * args.rounds,
                    )
                    for mode, (timed, wall, acknowledged) in turns.items():
                        cpu[mode] = cpu_seconds(servers[mode][0].pid) - before[mode]
                        if capturing(mode):
                            acknowledged_by[mode] += acknowledged
                        latencies[mode].append(timed)
                        walls[mode] = wall
                p50 = {}
                baselines = [mode for mode in modes if not capturing(mode)]
                both = np.concatenate([np.concatenate(latencies[mode]) for mode in baselines])
                baseline_p50 = float(np.percentile(both, 50)) * 1000
                for mode in modes:
                    pooled = np.concatenate(latencies[mode])
                    p50[mode] = float(np.percentile(pooled, 50)) * 1000
                    p99 = float(np.percentile(pooled, 99)) * 1000
                    ratio = f"{p50[mode] / p50[OFF]:.2f}" if mode != OFF else ""
                    if capturing(mode) and len(baselines) > 1:  # against off and off-b pooled
                        ratio += f" ({p50[mode] / baseline_p50:.2f})"
                    requests = args.requests * args.rounds
                    print(
                        f"{batch:>5} {concurrency:>4} {mode:>7} "
                        f"{requests / walls[mode]:>8.0f} {requests * batch / walls[mode]:>8.0f} "
                        f"{p50[mode]:>8.2f} {p99:>8.2f} {ratio:>17} "
                        f"{cpu[mode] / requests * 1000:>10.2f}",
                        flush=True,
                    )
        for server, _ in servers.values():
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=120)
        print()
        for mode in captured:
            server, _ = servers[mode]
            stored = Store(f"sqlite:///{work / f'predictions-{mode}.db'}").count()
            print(f"{mode}: rows acknowledged {acknowledged_by[mode]}, rows stored {stored}")
            if server.returncode != 0:
                raise SystemExit(f"{mode}: the server exited {server.returncode}")
            if stored != acknowledged_by[mode]:
                raise SystemExit(f"{mode}: capture lost or duplicated rows")


if __name__ == "__main__":
    main()
