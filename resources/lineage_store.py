"""DuckDB lineage store: one file under the flywheel home, short write connections."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl

from resources.lineage_schema import TABLES, create_statements

log = logging.getLogger(__name__)

_LOCK_HINTS = ("lock", "conflict")


class LineageStore(dg.ConfigurableResource):
    """Tables for every flywheel asset, in one DuckDB file (`<home>/lineage.duckdb`)."""

    home: str
    db_file: str = "lineage.duckdb"
    lock_timeout_s: float = 120.0

    @property
    def db_path(self) -> Path:
        return Path(self.home) / self.db_file

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; waits (with jitter) while another process holds the lock."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.db_path))
                break
            except duckdb.IOException as exc:
                if not any(h in str(exc).lower() for h in _LOCK_HINTS):
                    raise
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"lineage store {self.db_path} stayed locked for "
                        f"{self.lock_timeout_s:.0f}s: {exc}"
                    ) from exc
                time.sleep(delay + random.uniform(0, delay))
                delay = min(delay * 2, 2.0)
        try:
            for statement in create_statements():
                con.execute(statement)
            yield con
        finally:
            con.close()

    def query(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or []).pl()

    def replace_rows(self, table: str, rows: pl.DataFrame, **where: Any) -> int:
        """Idempotent write: delete the rows matching `where`, insert `rows`, in one transaction."""
        if table not in TABLES:
            raise KeyError(f"unknown lineage table {table!r}")
        clause = " AND ".join(f"{col} = ?" for col in where) or "TRUE"
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"DELETE FROM {table} WHERE {clause}", list(where.values()))
                if rows.height:
                    con.register("incoming_rows", rows.to_arrow())
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
                    con.unregister("incoming_rows")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        return rows.height

    def append_rows(self, table: str, rows: pl.DataFrame) -> int:
        """Append-only write, for logs such as the teacher ledger (spend happened; keep it)."""
        if table not in TABLES:
            raise KeyError(f"unknown lineage table {table!r}")
        if rows.height:
            with self.connect() as con:
                con.register("incoming_rows", rows.to_arrow())
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
                con.unregister("incoming_rows")
        return rows.height

    # -- cycle order -------------------------------------------------------------------------
    def register_cycle(self, cycle: str) -> int:
        """The cycle's position in the flywheel; a re-materialized cycle keeps its place."""
        with self.connect() as con:
            row = con.execute("SELECT seq FROM cycles WHERE cycle = ?", [cycle]).fetchone()
            if row:
                return int(row[0])
            seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM cycles").fetchone()[0]
            con.execute("INSERT INTO cycles VALUES (?, ?, ?)", [cycle, seq, datetime.now(UTC)])
            return int(seq)

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

    def cycles_up_to(self, cycle: str) -> list[str]:
        rows = self.query(
            "SELECT cycle FROM cycles WHERE seq <= ? ORDER BY seq", [self.cycle_seq(cycle)]
        )
        return rows["cycle"].to_list()
