"""The NeMo AutoModel venv for tests: build (or reuse) it, and wrap its interpreter.

``ensure_nemo_venv`` runs ``scripts/build_nemo_venv.sh`` (a no-op once its stamp exists: ``make
test`` builds it before pytest starts) and returns the venv's python, or the reason it cannot be
built. ``wrapper_python`` writes a tiny interpreter wrapper that puts the TEST-ONLY CPU shim
(``tests/support/nemo_cpu_shim``) on the venv's PYTHONPATH when this machine has no CUDA; the
launcher sees the wrapper as ``FLYWHEEL_NEMO_PYTHON``, and torchrun's workers inherit the
variable. Production never sees either.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-nemo"
BUILD_SCRIPT = REPO / "scripts" / "build_nemo_venv.sh"
SHIM_DIR = Path(__file__).with_name("nemo_cpu_shim")
BUILD_TIMEOUT_S = 1800


def ensure_nemo_venv() -> tuple[Path | None, str]:
    """(the venv's python, "") once it is built, else (None, why it could not be built)."""
    try:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT), str(VENV)],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"scripts/build_nemo_venv.sh did not finish: {error}"
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        return None, "scripts/build_nemo_venv.sh failed: " + " | ".join(tail)
    return VENV / "bin" / "python", ""


def wrapper_python(directory: Path, python: Path, cpu_shim: bool) -> Path:
    """An executable that runs ``python`` with the CPU shim first on PYTHONPATH (if asked)."""
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "nemo-python"
    lines = ["#!/bin/sh"]
    if cpu_shim:
        lines.append(f'export PYTHONPATH="{SHIM_DIR}${{PYTHONPATH:+:$PYTHONPATH}}"')
    lines.append(f'exec "{python}" "$@"')
    wrapper.write_text("\n".join(lines) + "\n", encoding="utf-8")
    wrapper.chmod(0o755)
    return wrapper
