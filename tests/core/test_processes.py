"""Protects child processes from outliving a launcher killed with SIGKILL (no orphaned trainers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from flywheel_core.processes import LAUNCHER_PID_ENV, alive
from tests.support.processes import ended_within, kill_if_alive

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

CHILD = textwrap.dedent(
    """
    import os, time
    from flywheel_core.processes import die_with_launcher
    armed = die_with_launcher(poll_s=0.2)
    print("child", os.getpid(), armed, flush=True)
    time.sleep(300)
    """
)
# Starts CHILD (directly, or through a shell that stays in between) with launcher_env().
LAUNCHER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from flywheel_core.processes import launcher_env
    child = [sys.executable, "-c", sys.argv[2]]
    if sys.argv[1] == "wrapped":
        child = ["sh", "-c", '"$0" -c "$1"; true', *child[::2]]
    subprocess.Popen(child, env={**os.environ, **launcher_env()})
    time.sleep(300)
    """
)


def start_launcher(how: str) -> tuple[subprocess.Popen, int]:
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, how, CHILD], stdout=subprocess.PIPE, text=True
    )
    word, pid, armed = launcher.stdout.readline().split()
    assert word == "child" and armed == "True"
    return launcher, int(pid)


@pytest.mark.parametrize("how", ["direct", "wrapped"])
def test_child_dies_when_its_launcher_is_killed(how):
    """direct: the kernel's parent-death signal; wrapped: the child watches the launcher's pid."""
    launcher, child = start_launcher(how)
    try:
        assert alive(child)
        launcher.kill()  # SIGKILL: no clean-up code runs in the launcher
        launcher.wait()
        assert ended_within(child, 10), f"{how} child {child} outlived its launcher"
    finally:
        kill_if_alive(child)


def test_child_of_a_launcher_already_gone_ends_at_once():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    env = {**os.environ, LAUNCHER_PID_ENV: str(gone.pid)}
    child = subprocess.run([sys.executable, "-c", CHILD], env=env, timeout=60, check=False)
    assert child.returncode == -signal.SIGKILL


def test_without_a_launcher_nothing_changes():
    env = {k: v for k, v in os.environ.items() if k != LAUNCHER_PID_ENV}
    code = "from flywheel_core.processes import die_with_launcher; print(die_with_launcher())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
