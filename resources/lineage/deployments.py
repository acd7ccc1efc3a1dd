"""The `deployments` table: which adapter version went live when (deploys and rollbacks)."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import polars as pl

DEPLOY, ROLLBACK = "deploy", "rollback"


def deployment_row(
    cycle: str,
    adapter_sha256: str,
    model_name: str,
    repository: str,
    version: int,
    served: bool,
    action: str,
    asset_version: str,
) -> dict:
    return {
        "cycle": cycle,
        "adapter_sha256": adapter_sha256,
        "model_name": model_name,
        "model_version": version,
        "repository": repository,
        "deployed_at": datetime.now(UTC),
        "asset_version": asset_version,
        "served": served,
        "action": action,
    }


class DeploymentQueries:
    """Mixed into `LineageStore`: the deployment history."""

    def record_deploy(self, row: dict) -> None:
        """Idempotent per cycle: re-deploying a cycle replaces its deploy row (not rollbacks)."""
        self.replace_rows("deployments", pl.DataFrame([row]), cycle=row["cycle"], action=DEPLOY)

    def clear_deploy(self, cycle: str) -> None:
        """The cycle deployed nothing (its adapter already serves): drop a stale deploy row."""
        self.replace_rows("deployments", pl.DataFrame(), cycle=cycle)

    def record_rollback(self, row: dict) -> None:
        self.append_rows("deployments", pl.DataFrame([row]))

    def find_deployment(self, target: str) -> dict:
        """The deploy row of a model version (`3`) or of a cycle (`bootstrap`)."""
        column = "model_version" if target.isdigit() else "cycle"
        value = int(target) if target.isdigit() else target
        rows = self.query(
            f"SELECT * FROM deployments WHERE {column} = ? "
            "AND coalesce(action, 'deploy') = 'deploy' ORDER BY deployed_at DESC LIMIT 1",
            [value],
        )
        if rows.is_empty():
            raise dg.Failure(f"no deployment of {column} {target!r} is recorded")
        return rows.row(0, named=True)

    def deployment_history(self) -> pl.DataFrame:
        return self.query(
            "SELECT deployed_at, action, cycle, model_version, served, adapter_sha256 "
            "FROM deployments ORDER BY deployed_at"
        )

    def deployed_adapter_uris(self) -> list[dict]:
        """cycle, adapter_sha256 and artifact uri of every deploy, oldest first."""
        return self.query(
            "SELECT d.cycle, d.adapter_sha256, a.uri FROM deployments d JOIN adapters a "
            "USING (cycle, adapter_sha256) WHERE coalesce(d.action, 'deploy') = 'deploy' "
            "ORDER BY d.deployed_at"
        ).to_dicts()
