"""The lineage store a command reads: one that exists, or a user error (never an empty new one)."""

from __future__ import annotations

from pathlib import Path

from flywheel_assets.environments import cli_lineage_store
from flywheel_cli.errors import UserError
from resources.lineage.store import LineageStore


def existing_store(home: Path) -> LineageStore:
    """The configured store (the code location's choice: a DuckDB file under `home`, or a
    DuckLake); a mistyped `--home` or a missing lake is a one-line error and creates nothing."""
    store = cli_lineage_store(home.resolve())
    if not store.exists():
        raise UserError(f"no lineage store at {store.describe()} (check --home / FLYWHEEL_HOME)")
    return store
