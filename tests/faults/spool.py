"""A spool folder that a test can fill up or make read-only while the service runs."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest


class SpoolFolder:
    """The folder the spool lives in, and the fault to inject into it.

    ``full``: a tmpfs of ``size`` bytes mounted on it, so writes fail with ENOSPC once it is
    full; where mounting is not allowed, the serving process gets RLIMIT_FSIZE instead (Python
    ignores SIGXFSZ, so a write past the limit fails with EFBIG: a full disk as the writer
    sees it). ``unwritable``: the folder and its files turn read-only while the service runs;
    root ignores permissions, so as root the service runs without CAP_DAC_OVERRIDE (as a
    service user would), through ``setpriv``.
    """

    def __init__(self, path: Path, fault: str, size: int) -> None:
        self.path = path
        self.fault = fault
        self.size = size
        self.mounted = False
        self.prefix: list[str] = []
        path.mkdir()
        if fault == "full":
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            self.mounted = done.returncode == 0
        elif os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv: cannot make a folder unwritable")
            self.prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]

    @property
    def how(self) -> str:
        if self.fault == "full":
            return f"tmpfs size={self.size}" if self.mounted else f"RLIMIT_FSIZE={self.size}"
        return "chmod a-w" + (" (service without CAP_DAC_OVERRIDE)" if self.prefix else "")

    def started(self, pid: int) -> None:
        """Called once the service runs: the fallback limit applies to that process."""
        if self.fault == "full" and not self.mounted:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (self.size, self.size))

    def break_it(self) -> None:
        """``unwritable``: the folder and whatever is in it become read-only now."""
        if self.fault == "unwritable":
            for child in self.path.iterdir():
                child.chmod(0o444)
            self.path.chmod(0o555)

    def close(self) -> None:
        self.path.chmod(0o755)
        for child in self.path.iterdir():
            with contextlib.suppress(OSError):
                child.chmod(0o644)
        if self.mounted:
            done = subprocess.run(
                ["umount", str(self.path)], capture_output=True, timeout=60, check=False
            )
            if done.returncode != 0:  # still busy: detach now, freed when the last user goes
                subprocess.run(["umount", "-l", str(self.path)], timeout=60, check=False)
