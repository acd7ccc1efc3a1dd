"""The lineage as it read at a DuckLake snapshot: "what did the lineage say when deployment
version N was made" (`flywheel audit --as-of-version N`).

Every DuckLake commit is a snapshot. The snapshot that inserted version N's deploy row is found
with `table_changes`; the lake is then attached a second time, read-only, at that snapshot
(`ATTACH ... (SNAPSHOT_VERSION n)`), and the audit queries run there unchanged: the tables and
the views as they were in that commit. The embedded DuckDB file keeps no snapshots.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from resources.lineage.audit import AuditError, AuditQueries
from resources.lineage.backends import DuckLake, catalog_uri, lake_instance
from resources.lineage.queries import CycleQueries

if TYPE_CHECKING:
    from resources.lineage.store import LineageStore


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: int
    snapshot_time: datetime


def _lake(store: LineageStore) -> DuckLake:
    backend = store.location
    if not isinstance(backend, DuckLake):
        raise NotImplementedError(
            f"the lineage store {store.describe()} keeps no snapshots: reading it as of a "
            "deployment needs the ducklake backend (FLYWHEEL_LINEAGE=ducklake)"
        )
    return backend


def deployment_snapshot(store: LineageStore, version: int) -> Snapshot:
    """The snapshot whose commit recorded deployment `version` (its first deploy row)."""
    alias = _lake(store).alias
    last = store.query(f"SELECT max(snapshot_id) AS id FROM {alias}.snapshots()")["id"][0]
    found = store.query(
        f"""
        SELECT c.snapshot_id, s.snapshot_time
        FROM {alias}.table_changes('deployments', 0, {int(last)}) c
        JOIN {alias}.snapshots() s USING (snapshot_id)
        WHERE c.change_type = 'insert' AND c.model_version = ?
          AND coalesce(c.action, 'deploy') = 'deploy'
        ORDER BY c.snapshot_id LIMIT 1
        """,
        [version],
    )
    if found.is_empty():
        raise AuditError(f"no deployment v{version} in the lineage")
    row = found.row(0, named=True)
    return Snapshot(int(row["snapshot_id"]), row["snapshot_time"])


class LineageAtSnapshot(AuditQueries, CycleQueries):
    """The audit reads (`find_adapter`, `deployed_adapter`, `audit_report`, ...) against the
    lake attached read-only at one snapshot."""

    def __init__(self, alias: str, snapshot: Snapshot) -> None:
        self.alias = alias
        self.snapshot = snapshot

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Attached at one snapshot, every read already sees that one commit."""
        yield

    def query(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        cursor = lake_instance().cursor()
        try:
            cursor.execute(f"USE {self.alias}")
            return cursor.execute(sql, params or []).pl()
        finally:
            cursor.close()


@contextmanager
def lineage_at(store: LineageStore, snapshot: Snapshot) -> Iterator[LineageAtSnapshot]:
    """The lineage as of `snapshot`, attached for the block and detached after it. (A local
    catalog file is attached once per process: call this while no other read of the same store
    is in progress.)"""
    lake = _lake(store)
    store.query("SELECT 1")  # the lake's extensions and S3 secret are in place
    alias = f"{lake.alias}_at_{snapshot.snapshot_id}"
    needed = ["ducklake"] + ["postgres"] * lake.on_postgres + ["httpfs"] * lake.on_s3
    con = lake_instance(*needed)
    uri = catalog_uri(lake.catalog).replace("'", "''")
    con.execute(
        f"ATTACH IF NOT EXISTS '{uri}' AS {alias} "
        f"(SNAPSHOT_VERSION {snapshot.snapshot_id}, READ_ONLY)"
    )
    try:
        yield LineageAtSnapshot(alias, snapshot)
    finally:
        con.execute(f"DETACH DATABASE IF EXISTS {alias}")
