"""The lineage store a command reads: one that exists, or a user error (never an empty new one)."""

from __future__ import annotations

from pathlib import Path

from flywheel_cli.errors import UserError
from resources.lineage.store import LineageStore


def existing_store(home: Path) -> LineageStore:
    """The store under `home`; a mistyped `--home` is a one-line error and creates nothing."""
    store = LineageStore(home=str(home.resolve()))
    if not store.db_path.is_file():
        raise UserError(f"no lineage store at {store.db_path} (check --home / FLYWHEEL_HOME)")
    return store
