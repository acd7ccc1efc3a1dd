"""The lineage store: one DuckDB file under the flywheel home (default) or a DuckLake, short
write connections, idempotent per-partition writes retried on conflicts."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import duckdb
import polars as pl

from flywheel_core.domain import QuarantinedOutput
from resources.lineage.audit import AuditQueries
from resources.lineage.backends import DuckDBFile, DuckLake, S3Access
from resources.lineage.deployments import DeploymentQueries
from resources.lineage.feedback import FeedbackQueries
from resources.lineage.queries import CycleQueries
from resources.lineage.schema import TABLES, schema_is_current, upgrade_schema

log = logging.getLogger(__name__)

_LOCK_HINTS = ("lock", "conflict")
WRITE_ATTEMPTS = 16  # a write that meets a concurrent writer's transaction is retried this often

# Longest pause between tries: a file's writers are threads of one process (short transactions);
# a lake's are processes on other machines, whose commits can take seconds.
MAX_BACKOFF_S = {"duckdb": 1.0, "ducklake": 5.0}

Backend = DuckDBFile | DuckLake


class _Counters:
    """Writes and conflict retries of this process (the benchmark reports them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.writes = 0
        self.retries = 0

    def add(self, writes: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.writes += writes
            self.retries += retries


WRITE_COUNTERS = _Counters()


class _OpenDatabases:
    """One DuckDB handle per lineage store and process, shared by its threads through cursors.

    Each thread opening the file on its own raced DuckDB's instance cache ("Unique file handle
    conflict") and re-ran the schema DDL concurrently ("Catalog write-write conflict"). Here the
    first cursor opens the store (waiting while another process holds its lock) and creates the
    schema once; the last cursor to close releases a file. A DuckLake on a Postgres catalog stays
    attached for the process's life (any number of processes may hold it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, list] = {}  # key -> [connection, cursors in use]

    def acquire(self, backend: Backend, timeout_s: float) -> duckdb.DuckDBPyConnection:
        with self._lock:
            entry = self._open.get(backend.key)
            if entry is None:
                con = _connect_waiting(backend, timeout_s)
                try:
                    _ensure_schema(con, backend)
                except Exception:
                    backend.close(con)
                    raise
                entry = self._open[backend.key] = [con, 0]
            entry[1] += 1
            cursor = entry[0].cursor()
        if backend.kind == "ducklake":
            cursor.execute(f"USE {backend.alias}")  # the default catalog is per connection
        return cursor

    def release(self, backend: Backend, cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.close()
        with self._lock:
            entry = self._open[backend.key]
            entry[1] -= 1
            if entry[1] == 0 and not backend.keeps_handle:
                backend.close(entry[0])
                del self._open[backend.key]


_OPEN = _OpenDatabases()
_PINNED = threading.local()  # cursors: store key -> this thread's read transaction (`reading`)

# One DuckLake writer per process at a time: a process's threads would only conflict with one
# another at commit (DuckLake detects conflicts per table, not per row); other processes' writes
# are the conflicts left to retry.
_LAKE_WRITERS: dict[str, threading.RLock] = {}
_LAKE_WRITERS_LOCK = threading.Lock()


def _writer_lock(backend: Backend) -> threading.RLock | None:
    if backend.kind != "ducklake":
        return None  # DuckDB's own MVCC serves one file's threads
    with _LAKE_WRITERS_LOCK:
        return _LAKE_WRITERS.setdefault(backend.key, threading.RLock())


def _ensure_schema(con: duckdb.DuckDBPyConnection, backend: Backend) -> None:
    """Bring the store to this code's DDL unless it already records its hash: opening a current
    store runs one read, not ~45 DDL statements (which on the file backend also rewrote the
    file on every open, since the file is released and re-opened between reads)."""
    cur = con.cursor()
    try:
        if backend.kind == "ducklake":
            cur.execute(f"USE {backend.alias}")
        for attempt in range(1, WRITE_ATTEMPTS + 1):  # other processes may be upgrading it too
            if schema_is_current(cur, backend.kind):
                return
            try:
                cur.execute("BEGIN TRANSACTION")
                upgrade_schema(cur, backend.kind)
                cur.execute("COMMIT")
                return
            except duckdb.Error as exc:
                _rollback(cur)
                if not _is_conflict(exc) or attempt == WRITE_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * attempt)
    finally:
        cur.close()


def _connect_waiting(backend: Backend, timeout_s: float) -> duckdb.DuckDBPyConnection:
    """Open the store; wait (with jitter) while another process holds its (catalog) file."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            return backend.open()
        except duckdb.Error as exc:
            locked = isinstance(exc, duckdb.IOException | duckdb.BinderException) and any(
                h in str(exc).lower() for h in _LOCK_HINTS
            )
            if not locked:
                raise
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"lineage store {backend.describe()} stayed locked for {timeout_s:.0f}s: {exc}"
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
    """Tables for every flywheel asset; every read and write of the flywheel goes through its
    methods (the mixins hold the named queries).

    `backend`: `duckdb` (one file, `<home>/lineage.duckdb`, the default) or `ducklake` (the
    same tables in a DuckLake: `catalog` a Postgres URI or a local catalog file, `data_path` an
    S3 prefix or a local directory; see docs/scaling-out.md)."""

    home: str
    db_file: str = "lineage.duckdb"
    lock_timeout_s: float = 120.0
    backend: Literal["duckdb", "ducklake"] = "duckdb"
    catalog: str | None = None  # ducklake: postgresql://... | a local file (default: home)
    data_path: str | None = None  # ducklake: s3://bucket/prefix/ | a local dir (default: home)
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_session_token: str | None = None
    write_attempts: int = WRITE_ATTEMPTS

    @property
    def db_path(self) -> Path:
        return Path(self.home) / self.db_file

    @property
    def location(self) -> Backend:
        """Where the tables live (built from the fields; cheap)."""
        if self.backend == "duckdb":
            return DuckDBFile(self.db_path)
        return DuckLake(
            catalog=self.catalog or str(Path(self.home) / "lineage.ducklake"),
            data_path=self.data_path or str(Path(self.home) / "lineage_data"),
            s3=S3Access(
                endpoint_url=self.s3_endpoint_url,
                region=self.s3_region,
                access_key_id=self.s3_access_key_id,
                secret_access_key=self.s3_secret_access_key,
                session_token=self.s3_session_token,
            ),
        )

    def exists(self) -> bool:
        """Whether the store was ever created (a CLI never creates one at a mistyped home)."""
        return self.location.exists()

    def describe(self) -> str:
        return self.location.describe()

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived cursor on the process's shared database handle (threads share it; a
        file is released when the last cursor closes, so other processes can take their turn)."""
        backend = self.location
        cursor = _OPEN.acquire(backend, self.lock_timeout_s)
        try:
            yield cursor
        finally:
            _OPEN.release(backend, cursor)

    def write(
        self,
        action: Callable[[duckdb.DuckDBPyConnection], None],
        what: str,
        serialize: str | None = None,
    ) -> None:
        """Run one write transaction, retried (with jitter) when it meets another writer's.

        `serialize` names a table whose writers must not overlap: on a DuckLake, whose commits
        only conflict on deletes of the same rows' files, the transaction also alters the table
        (a comment), so two concurrent writers of it conflict and one retries (on the file
        backend one process writes at a time anyway).
        """
        delay = 0.02
        lock = _writer_lock(self.location)
        for attempt in range(1, self.write_attempts + 1):
            try:
                with lock or nullcontext(), self.connect() as con:
                    con.execute("BEGIN TRANSACTION")
                    try:
                        if serialize and self.backend == "ducklake":
                            con.execute(f"COMMENT ON TABLE {serialize} IS 'flywheel lineage'")
                        action(con)
                        con.execute("COMMIT")
                    except Exception:
                        _rollback(con)
                        raise
                WRITE_COUNTERS.add(writes=1)
                return
            except duckdb.TransactionException as exc:
                if not _is_conflict(exc) or attempt == self.write_attempts:
                    raise RuntimeError(
                        f"lineage store {self.describe()}: writing {what} failed after {attempt} "
                        f"attempt(s) (concurrent writers; raise lineage.write_attempts): {exc}"
                    ) from exc
                WRITE_COUNTERS.add(retries=1)
                log.info("write conflict on %s (attempt %d), retrying: %s", what, attempt, exc)
                # Jittered exponential backoff up to 5 s: a writer whose transaction is slow
                # (a loaded machine) must not keep losing to faster ones.
                time.sleep(delay + random.uniform(0, delay))
                delay = min(delay * 2, MAX_BACKOFF_S[self.backend])

    def snapshots(self) -> pl.DataFrame:
        """DuckLake only: every commit as a snapshot (id, time, what changed), oldest first.
        Any table reads as of a snapshot with `FROM <table> AT (VERSION => <id>)`."""
        backend = self.location
        if backend.kind != "ducklake":
            raise NotImplementedError("snapshots need the ducklake lineage backend")
        return self.query(
            "SELECT snapshot_id, snapshot_time, changes::VARCHAR AS changes "
            f"FROM {backend.alias}.snapshots() ORDER BY snapshot_id"
        )

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Run this thread's `query` calls in one read transaction: they see one snapshot (a
        concurrent writer's commit lands wholly before or after them), the file is opened once,
        and a DuckLake reads its catalog snapshot once. Writes keep their own transactions."""
        pinned = _PINNED.__dict__.setdefault("cursors", {})
        key = self.location.key
        if key in pinned:  # nested: the outer block's transaction serves
            yield
            return
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            pinned[key] = con
            try:
                yield
            finally:
                del pinned[key]
                _rollback(con)  # it only read

    def query(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        pinned = _PINNED.__dict__.get("cursors", {}).get(self.location.key)
        if pinned is not None:
            return pinned.execute(sql, params or []).pl()
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

        self.write(action, f"{table} {where or ''}".strip(), serialize=table)
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

        self.write(action, f"cycles {cycle}", serialize="cycles")
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
