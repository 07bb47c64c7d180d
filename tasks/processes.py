"""Long-running servers started by the tasks, stopped whole.

A server such as ``mlflow server`` forks a supervisor, its workers and a job runner. When the
task's own process is stopped (SIGTERM from a supervisor, a container, CI; Ctrl-C), killing
only the direct child leaves the rest running and holding the port. Each server therefore
runs in a process group of its own; the task forwards every stop signal to the whole group
and waits, with a deadline, until no member of the group is left (SIGKILL after it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import typing as T
from pathlib import Path

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def group_members(group: int) -> list[int]:
    """The live (not zombie) processes of a process group, from /proc (Linux); elsewhere the
    group leader's id while ``killpg(group, 0)`` says the group still exists."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [group]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == group:
            members.append(int(entry.name))
    return members


def stop_group(group: int, grace: float, first: signal.Signals = signal.SIGTERM) -> bool:
    """Signal a process group, wait up to ``grace`` seconds for every member to exit, then
    SIGKILL what is left. True when the group ended within the grace period."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, first)
    deadline = time.monotonic() + grace
    while group_members(group):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
            return False
        time.sleep(0.2)
    return True


def run_group(command: T.Sequence[str], grace: float = 20.0) -> int:
    """Run ``command`` in a process group of its own until it exits or this process is asked
    to stop (every signal in STOP_SIGNALS is forwarded to the whole group); either way, no
    member of the group outlives the call by more than ``grace`` seconds. Returns the
    command's exit code (negative: the signal that ended it)."""
    process = subprocess.Popen(list(command), start_new_session=True)  # group id == its pid

    def forward(signum: int, _frame: T.Any) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)

    previous = {number: signal.signal(number, forward) for number in STOP_SIGNALS}
    try:
        code = process.wait()
    finally:
        # The leader may be gone (or this process interrupted) with workers still running.
        try:
            if process.poll() is None or group_members(process.pid):
                stop_group(process.pid, grace)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
    return code
