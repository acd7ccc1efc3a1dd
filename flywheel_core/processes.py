"""Child processes that end with the process that launched them (no orphaned trainers).

A launcher passes `launcher_env()` to the child it starts; the child calls `die_with_launcher()`
first thing. When the launcher dies, however it dies (SIGKILL included), the child gets `sig`:
- directly launched, on Linux: the kernel sends it (``prctl(PR_SET_PDEATHSIG)``), at once
  (strictly, when the launcher's thread that started the child exits: Pipes waits for the
  child in that thread);
- otherwise (another process in between, e.g. torchrun's workers, or not Linux): a daemon
  thread polls the launcher's pid every `poll_s` seconds.
Without the variable (a script run by hand) nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path

LAUNCHER_PID_ENV = "FLYWHEEL_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1


def launcher_env() -> dict[str, str]:
    """The environment entry that makes a child started by this process die with it."""
    return {LAUNCHER_PID_ENV: str(os.getpid())}


def alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(0) is all there is
    return state not in ("Z", "X")


def _kernel_signal_on_parent_death(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(pid: int, sig: int, poll_s: float) -> None:
    def watch() -> None:
        while alive(pid):
            time.sleep(poll_s)
        os.kill(os.getpid(), sig)

    threading.Thread(target=watch, name="die-with-launcher", daemon=True).start()


def die_with_launcher(sig: int = signal.SIGKILL, poll_s: float = 1.0) -> bool:
    """End this process with `sig` when the launcher named in the environment exits; whether
    a launcher was named. A launcher already gone ends this process now."""
    raw = os.environ.get(LAUNCHER_PID_ENV)
    if not raw:
        return False
    launcher = int(raw)
    direct = os.getppid() == launcher
    if not (direct and _kernel_signal_on_parent_death(sig)):
        _watch(launcher, sig, poll_s)
    if not alive(launcher):  # it died before the signal was armed
        os.kill(os.getpid(), sig)
    return True
