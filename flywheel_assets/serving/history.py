"""The `deployments` table: which adapter version went live when (deploys and rollbacks)."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from resources.lineage_store import LineageStore
from resources.triton_repository import TritonModelRepository

DEPLOY, ROLLBACK = "deploy", "rollback"


def deployment_row(
    cycle: str,
    adapter_sha256: str,
    repo: TritonModelRepository,
    version: int,
    served: bool,
    action: str,
    asset_version: str,
) -> dict:
    return {
        "cycle": cycle,
        "adapter_sha256": adapter_sha256,
        "model_name": repo.model_name,
        "model_version": version,
        "repository": repo.repository_dir,
        "deployed_at": datetime.now(UTC),
        "asset_version": asset_version,
        "served": served,
        "action": action,
    }


def record_deploy(store: LineageStore, row: dict) -> None:
    """Idempotent per cycle: re-deploying a cycle replaces its deploy row (not its rollbacks)."""
    store.replace_rows("deployments", pl.DataFrame([row]), cycle=row["cycle"], action=DEPLOY)


def record_rollback(store: LineageStore, row: dict) -> None:
    store.append_rows("deployments", pl.DataFrame([row]))


def find_deployment(store: LineageStore, target: str) -> dict:
    """The deploy row of a model version (`3`) or of a cycle (`bootstrap`)."""
    column = "model_version" if target.isdigit() else "cycle"
    value = int(target) if target.isdigit() else target
    rows = store.query(
        f"SELECT * FROM deployments WHERE {column} = ? AND coalesce(action, 'deploy') = 'deploy' "
        "ORDER BY deployed_at DESC LIMIT 1",
        [value],
    )
    if rows.is_empty():
        raise dg.Failure(f"no deployment of {column} {target!r} is recorded")
    return rows.row(0, named=True)


def history(store: LineageStore) -> pl.DataFrame:
    return store.query(
        "SELECT deployed_at, action, cycle, model_version, served, adapter_sha256 "
        "FROM deployments ORDER BY deployed_at"
    )
