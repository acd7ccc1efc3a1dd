"""Protects the layering: the core library and the Triton backend never load Dagster."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRITON_BACKEND = REPO / "triton_models" / "flywheel_student" / "model.py"
ALLOWED_IN_TRITON = {"flywheel_core", "numpy", "torch", "triton_python_backend_utils"}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names)


def test_the_triton_backend_imports_only_the_core_library():
    assert imported_packages(TRITON_BACKEND) <= ALLOWED_IN_TRITON


def test_importing_the_core_library_loads_no_dagster():
    """Every core module imports without pulling dagster into the process."""
    modules = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in (REPO / "flywheel_core").rglob("*.py")
        if p.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
