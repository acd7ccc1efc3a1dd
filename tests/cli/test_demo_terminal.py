"""Protects the demo's terminal: a whole `flywheel demo` cycle prints no Dagster warning."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[2]
# Dagster's own warning classes, and any warning raised from a file of a dagster package.
DAGSTER_WARNING = re.compile(
    r"(Preview|Beta|Supersession|Experimental)Warning|/dagster[\w-]*/\S*\.py:\d+: \w*Warning"
)


def test_a_demo_cycle_prints_no_dagster_warning(tmp_path, cache_dir):
    sets = [arg for override in TINY_OVERRIDES for arg in ("--set", override)]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "FLYWHEEL_"))},
        "FLYWHEEL_CACHE": str(cache_dir),
    }
    home = tmp_path / "home"
    command = [sys.executable, "-m", "flywheel_cli.main", "demo", "--cycles", "1", "--no-serve"]
    done = subprocess.run(
        [*command, "--home", str(home), *sets],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Held-out accuracy of the student" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if DAGSTER_WARNING.search(line)]
    assert warnings == []
