"""The `deployments` table: which adapter version went live when (deploys and rollbacks).

The history is append-only: every deploy and every rollback is a new row (who, what, when);
no row is ever replaced or deleted. The model serving now is the latest row.
"""

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
    deployed_by: str,
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
        "deployed_by": deployed_by,
    }


class DeploymentQueries:
    """Mixed into `LineageStore`: the deployment history."""

    def record_deploy(self, row: dict) -> None:
        """Append a deploy (history is append-only: an earlier row is never replaced)."""
        self.append_rows("deployments", pl.DataFrame([row]))

    def record_rollback(self, row: dict) -> None:
        self.append_rows("deployments", pl.DataFrame([row]))

    def serving_now(self) -> dict | None:
        """The latest deployment event (deploy or rollback): the model serving now, with its
        cycle's position (`seq`); None while the base model serves."""
        rows = self.query(
            """
            SELECT d.cycle AS deployed_in, c.seq, d.model_version, d.adapter_sha256, d.action,
                   d.deployed_at, a.uri
            FROM deployments d JOIN cycles c ON c.cycle = d.cycle
            LEFT JOIN adapters a ON a.adapter_sha256 = d.adapter_sha256 AND a.cycle = d.cycle
            ORDER BY d.deployed_at DESC LIMIT 1
            """
        )
        return None if rows.is_empty() else rows.row(0, named=True)

    def newest_deployed(self) -> dict | None:
        """The deploy of the newest cycle (in flywheel order) that was ever deployed."""
        rows = self.query(
            """
            SELECT d.cycle, c.seq, d.model_version, d.adapter_sha256, d.deployed_at
            FROM deployments d JOIN cycles c ON c.cycle = d.cycle
            WHERE coalesce(d.action, 'deploy') = 'deploy'
            ORDER BY c.seq DESC, d.deployed_at DESC LIMIT 1
            """
        )
        return None if rows.is_empty() else rows.row(0, named=True)

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
            "SELECT deployed_at, action, cycle, model_version, served, adapter_sha256, "
            "deployed_by FROM deployments ORDER BY deployed_at"
        )

    def deployed_adapter_uris(self) -> list[dict]:
        """cycle, adapter_sha256 and artifact uri of every adapter deployed, oldest first."""
        return self.query(
            "SELECT d.cycle, d.adapter_sha256, any_value(a.uri) AS uri FROM deployments d "
            "JOIN adapters a USING (cycle, adapter_sha256) "
            "WHERE coalesce(d.action, 'deploy') = 'deploy' "
            "GROUP BY d.cycle, d.adapter_sha256 ORDER BY min(d.deployed_at)"
        ).to_dicts()
