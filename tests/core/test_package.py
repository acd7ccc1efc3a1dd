"""Protects imports of the core library: one regular package, never merged with another copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_core_library_is_one_regular_package():
    """A namespace package (no __init__.py) merges every `flywheel_core` folder on the path (an
    editable install of another checkout, a git worktree), so a module deleted here could
    still be imported from there."""
    code = "import flywheel_core as c; print(c.__file__); print(list(c.__path__))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [str(REPO / "flywheel_core" / "__init__.py"), str([str(REPO / "flywheel_core")])]
