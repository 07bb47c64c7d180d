"""A PostgreSQL cluster of the test's own: ``initdb`` in a temporary folder, its own port and
socket directory, started and stopped with ``pg_ctl`` so a test can take the database away
(``stop -m immediate`` is a crash: no checkpoint, no goodbye to clients) and bring it back.

The machine's shared PostgreSQL cannot be crashed by a test without hurting every other test;
this one can. PostgreSQL refuses to run as root: when we are root the cluster belongs to the
``postgres`` user and every command runs through ``runuser``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import typing as T
from pathlib import Path

import pytest

OWNER = "postgres"  # the Debian package's user, when we are root
START_TIMEOUT = 120.0  # seconds: crash recovery on a loaded 2-core machine can be slow
STOP_TIMEOUT = 60.0


def _binaries() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian layout), else one on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


class PrivatePostgres:
    """One cluster: ``start()``, ``crash()`` (stop -m immediate), ``start()`` again, ``remove()``."""

    def __init__(self, port: int) -> None:
        bin_dir = _binaries()
        if bin_dir is None:
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bin_dir = bin_dir
        self.port = port
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                self._owner = pwd.getpwnam(OWNER)
            except KeyError:
                pytest.skip(f"running as root and no {OWNER!r} user to own a PostgreSQL cluster")
        # Not under pytest's tmp_path: that is private to root (0700) and the cluster's owner
        # must reach its folder.
        self.root = Path(tempfile.mkdtemp(prefix="bikes-faults-pg-"))
        if self._as_root:
            os.chown(self.root, self._owner.pw_uid, self._owner.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"

    @property
    def uri(self) -> str:
        """SQLAlchemy URI of its ``postgres`` database over TCP (trust authentication)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        command = [*args]
        if self._as_root:
            command = ["runuser", "-u", OWNER, "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )

    def _checked(self, *args: str, timeout: float) -> None:
        done = self._run(*args, timeout=timeout)
        assert done.returncode == 0, (
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}\n"
            + self.log_text()[-3000:]
        )

    def init(self) -> None:
        self._checked(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",  # the folder is thrown away: initdb's own fsyncs buy nothing here
            timeout=START_TIMEOUT,
        )

    def start(self) -> None:
        """Start and wait until it accepts connections (after crash recovery, if any)."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._checked(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "start",
            timeout=START_TIMEOUT + 30,
        )
        self.wait_until(ready=True, timeout=START_TIMEOUT)

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``: the server dies as in a power cut of the database
        host (clients see their connections drop), then recovers from WAL at the next start."""
        self.stop("immediate")

    def stop(self, mode: T.Literal["immediate", "fast"] = "fast") -> None:
        self._checked(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            mode,
            "-w",
            "-t",
            str(int(STOP_TIMEOUT)),
            "stop",
            timeout=STOP_TIMEOUT + 30,
        )
        self.wait_until(ready=False, timeout=STOP_TIMEOUT)

    def running(self) -> bool:
        status = self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "status", timeout=30)
        return status.returncode == 0

    def wait_until(self, ready: bool, timeout: float) -> None:
        """Poll ``pg_isready`` until the server does (or does not) accept connections."""
        deadline = time.monotonic() + timeout
        while True:
            probe = subprocess.run(
                [
                    str(self.bin_dir / "pg_isready"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-t",
                    "2",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if (probe.returncode == 0) == ready:
                return
            assert time.monotonic() < deadline, (
                f"private PostgreSQL on port {self.port} still "
                f"{'not ' if ready else ''}accepting connections after {timeout:g} s\n"
                + self.log_text()[-3000:]
            )
            time.sleep(0.1)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def remove(self) -> None:
        """Stop it if it runs (immediately: its data is thrown away) and delete the folder."""
        try:
            if self.data.exists() and self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
