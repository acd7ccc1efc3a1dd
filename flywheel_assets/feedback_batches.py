"""Feedback batches: safe partition keys for landed files, and the key -> file record."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

import polars as pl

from resources.feedback_landing import SUFFIXES, LandedFile
from resources.lineage_store import LineageStore

MAX_STEM = 40
HASH_CHARS = 12


def batch_key(name: str, sha256: str) -> str:
    """`<safe stem>-<content hash prefix>`: only [a-z0-9-_.], at most 53 characters."""
    stem = name.rsplit("/", 1)[-1].lower()
    for suffix in SUFFIXES:
        stem = stem.removesuffix(suffix)
    stem = re.sub(r"[^a-z0-9_.-]+", "-", stem)
    stem = re.sub(r"\.{2,}", ".", stem).strip("-._")[:MAX_STEM].strip("-._")
    return f"{stem or 'batch'}-{sha256[:HASH_CHARS]}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def registered_batches(store: LineageStore) -> dict[str, str]:
    """Content sha256 -> partition key of every batch the sensor registered."""
    rows = store.query("SELECT sha256, cycle FROM feedback_batches WHERE sha256 IS NOT NULL")
    return dict(zip(rows["sha256"], rows["cycle"], strict=True))


def batch_row(key: str, file: LandedFile | None, uri: str | None, sha256: str | None) -> dict:
    return {
        "cycle": key,
        "file_name": file.name if file else None,
        "uri": uri,
        "sha256": sha256,
        "size_bytes": file.size if file else None,
        "signature": file.signature if file else None,
        "registered_at": datetime.now(UTC),
    }


def record_batches(store: LineageStore, rows: list[dict]) -> None:
    """Record key -> file for new partitions (one short transaction)."""
    if not rows:
        return
    frame = pl.DataFrame(rows)
    with store.connect() as con:
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM feedback_batches WHERE cycle IN ?", [frame["cycle"].to_list()])
        con.register("incoming_batches", frame.to_arrow())
        con.execute("INSERT INTO feedback_batches BY NAME SELECT * FROM incoming_batches")
        con.execute("COMMIT")


def lookup_batch(store: LineageStore, cycle: str) -> dict | None:
    rows = store.query("SELECT * FROM feedback_batches WHERE cycle = ?", [cycle])
    return None if rows.is_empty() else rows.row(0, named=True)


def earlier_hashes(store: LineageStore, cycle: str) -> frozenset[str]:
    """Content hashes of rows accepted in cycles before this one."""
    rows = store.query(
        """
        SELECT DISTINCT f.content_sha256 FROM feedback f JOIN cycles c ON c.cycle = f.cycle
        WHERE c.seq < (SELECT seq FROM cycles WHERE cycle = ?)
        """,
        [cycle],
    )
    return frozenset(rows["content_sha256"].to_list())
