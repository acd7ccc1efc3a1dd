"""DuckDB lineage store: one file under the flywheel home, short write connections."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl

from flywheel_core.domain import QuarantinedOutput
from resources.lineage.audit import AuditQueries
from resources.lineage.deployments import DeploymentQueries
from resources.lineage.feedback import FeedbackQueries
from resources.lineage.queries import CycleQueries
from resources.lineage.schema import TABLES, create_statements

log = logging.getLogger(__name__)

_LOCK_HINTS = ("lock", "conflict")
WRITE_ATTEMPTS = 8  # a write that meets a concurrent writer's transaction is retried this often


class _OpenDatabases:
    """One DuckDB handle per file and process, shared by its threads through cursors.

    Each thread opening the file on its own raced DuckDB's instance cache ("Unique file handle
    conflict") and re-ran the schema DDL concurrently ("Catalog write-write conflict"). Here the
    first cursor opens the file (waiting while another process holds its lock) and creates the
    schema once; the last cursor to close releases the file.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, list] = {}  # path -> [connection, cursors in use]

    def acquire(self, path: Path, timeout_s: float) -> duckdb.DuckDBPyConnection:
        key = str(path.resolve())
        with self._lock:
            entry = self._open.get(key)
            if entry is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                con = _connect_waiting(key, timeout_s)
                try:
                    for statement in create_statements():
                        con.execute(statement)
                except Exception:
                    con.close()
                    raise
                entry = self._open[key] = [con, 0]
            entry[1] += 1
            return entry[0].cursor()

    def release(self, path: Path, cursor: duckdb.DuckDBPyConnection) -> None:
        key = str(path.resolve())
        cursor.close()
        with self._lock:
            entry = self._open[key]
            entry[1] -= 1
            if entry[1] == 0:
                entry[0].close()
                del self._open[key]


_OPEN = _OpenDatabases()


def _connect_waiting(path: str, timeout_s: float) -> duckdb.DuckDBPyConnection:
    """Open the file; wait (with jitter) while another process holds its lock."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            return duckdb.connect(path)
        except duckdb.IOException as exc:
            if not any(h in str(exc).lower() for h in _LOCK_HINTS):
                raise
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"lineage store {path} stayed locked for {timeout_s:.0f}s: {exc}"
                ) from exc
            time.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 2.0)


def _is_conflict(exc: Exception) -> bool:
    return isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower()


QUARANTINE_SCHEMA = {
    "cycle": pl.String,
    "asset": pl.String,
    "call_key": pl.String,
    "item_index": pl.Int32,
    "raw": pl.String,
    "reason": pl.String,
    "asset_version": pl.String,
}


class LineageStore(
    CycleQueries, FeedbackQueries, DeploymentQueries, AuditQueries, dg.ConfigurableResource
):
    """Tables for every flywheel asset, in one DuckDB file (`<home>/lineage.duckdb`); every read
    and write of the flywheel goes through its methods (the mixins hold the named queries)."""

    home: str
    db_file: str = "lineage.duckdb"
    lock_timeout_s: float = 120.0

    @property
    def db_path(self) -> Path:
        return Path(self.home) / self.db_file

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived cursor on the process's shared database handle (threads share it; the
        file is released when the last cursor closes, so other processes can take their turn)."""
        cursor = _OPEN.acquire(self.db_path, self.lock_timeout_s)
        try:
            yield cursor
        finally:
            _OPEN.release(self.db_path, cursor)

    def write(self, action: Callable[[duckdb.DuckDBPyConnection], None], what: str) -> None:
        """Run one write transaction, retried (with jitter) when it meets another writer's."""
        delay = 0.02
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self.connect() as con:
                    con.execute("BEGIN TRANSACTION")
                    try:
                        action(con)
                        con.execute("COMMIT")
                    except Exception:
                        _rollback(con)
                        raise
                return
            except duckdb.TransactionException as exc:
                if not _is_conflict(exc) or attempt == WRITE_ATTEMPTS:
                    raise RuntimeError(
                        f"lineage store {self.db_path}: writing {what} failed after {attempt} "
                        f"attempt(s): {exc}"
                    ) from exc
                log.info("write conflict on %s (attempt %d), retrying: %s", what, attempt, exc)
                time.sleep(delay + random.uniform(0, delay))
                delay = min(delay * 2, 1.0)

    def query(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or []).pl()

    def replace_rows(self, table: str, rows: pl.DataFrame, **where: Any) -> int:
        """Idempotent write: delete the rows matching `where`, insert `rows`, in one transaction."""
        if table not in TABLES:
            raise KeyError(f"unknown lineage table {table!r}")
        clause = " AND ".join(f"{col} = ?" for col in where) or "TRUE"

        def action(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(f"DELETE FROM {table} WHERE {clause}", list(where.values()))
            _insert(con, table, rows)

        self.write(action, f"{table} {where or ''}".strip())
        return rows.height

    def append_rows(self, table: str, rows: pl.DataFrame) -> int:
        """Append-only write, for logs such as the teacher ledger (spend happened; keep it)."""
        if table not in TABLES:
            raise KeyError(f"unknown lineage table {table!r}")
        if rows.height:
            self.write(lambda con: _insert(con, table, rows), table)
        return rows.height

    # -- cycle order -------------------------------------------------------------------------
    def register_cycle(self, cycle: str) -> int:
        """The cycle's position in the flywheel (arrival order); a re-materialized cycle keeps its
        place. One transaction, so two processes registering at once get distinct places."""
        seqs: list[int] = []

        def action(con: duckdb.DuckDBPyConnection) -> None:
            seqs.clear()
            row = con.execute("SELECT seq FROM cycles WHERE cycle = ?", [cycle]).fetchone()
            if row:
                seqs.append(int(row[0]))
                return
            seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM cycles").fetchone()[0]
            con.execute("INSERT INTO cycles VALUES (?, ?, ?)", [cycle, seq, datetime.now(UTC)])
            seqs.append(int(seq))

        self.write(action, f"cycles {cycle}")
        return seqs[0]

    def cycle_seq(self, cycle: str) -> int:
        rows = self.query("SELECT seq FROM cycles WHERE cycle = ?", [cycle])
        if rows.is_empty():
            raise dg.Failure(
                f"cycle {cycle!r} is not registered: materialize its reviewer_feedback first"
            )
        return int(rows["seq"][0])

    def previous_cycle(self, cycle: str, table: str) -> str | None:
        """The latest earlier cycle that has rows in `table` (None for the first cycle)."""
        if table not in TABLES:
            raise KeyError(f"unknown lineage table {table!r}")
        rows = self.query(
            f"""
            SELECT c.cycle FROM cycles c
            WHERE c.seq < ? AND EXISTS (SELECT 1 FROM {table} t WHERE t.cycle = c.cycle)
            ORDER BY c.seq DESC LIMIT 1
            """,
            [self.cycle_seq(cycle)],
        )
        return None if rows.is_empty() else str(rows["cycle"][0])

    def predecessor(self, cycle: str) -> str | None:
        """The cycle this one builds on: the last earlier cycle (arrival order) that completed,
        i.e. has its adapter; a cycle still running or failed before training is skipped, so
        its exam or curriculum never mixes with another cycle's adapter."""
        return self.previous_cycle(cycle, "adapters")

    def cycles_up_to(self, cycle: str) -> list[str]:
        rows = self.query(
            "SELECT cycle FROM cycles WHERE seq <= ? ORDER BY seq", [self.cycle_seq(cycle)]
        )
        return rows["cycle"].to_list()

    # -- teacher outputs that failed validation ------------------------------------------------
    def store_quarantine(
        self, cycle: str, asset: str, version: str, rows: list[QuarantinedOutput]
    ) -> int:
        """Replace the asset's quarantine rows of the cycle (idempotent per cycle and asset)."""
        frame = pl.DataFrame(
            [
                {**q.model_dump(), "cycle": cycle, "asset": asset, "asset_version": version}
                for q in rows
            ],
            schema=QUARANTINE_SCHEMA,
        )
        return self.replace_rows("teacher_quarantine", frame, cycle=cycle, asset=asset)


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: pl.DataFrame) -> None:
    if rows.height:
        con.register("incoming_rows", rows.to_arrow())
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
        con.unregister("incoming_rows")


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back if a transaction is still open: a failed COMMIT has already rolled back, and
    a second ROLLBACK would raise and hide the real error (e.g. a conflict to retry)."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass
