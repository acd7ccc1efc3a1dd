"""Helpers for tests that kill a launcher process: find its children, wait for a pid to end."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from flywheel_core.processes import alive


def children(ppid: int, needle: str) -> list[int]:
    """Pids of `ppid`'s child processes whose command line contains `needle` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if parent == ppid and needle in cmdline:
            found.append(int(entry.name))
    return found


def ended_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return not alive(pid)


def kill_if_alive(pid: int) -> None:
    """Clean-up: this test's leftover process, by its pid."""
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
