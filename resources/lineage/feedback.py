"""Feedback batches in the lineage store: the sensor's key -> file records and row counts."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from resources.feedback_landing import LandedFile


def batch_row(key: str, file: LandedFile | None, uri: str | None, sha256: str | None) -> dict:
    """A `feedback_batches` row: which landed file (and content) a cycle stands for."""
    return {
        "cycle": key,
        "file_name": file.name if file else None,
        "uri": uri,
        "sha256": sha256,
        "size_bytes": file.size if file else None,
        "signature": file.signature if file else None,
        "registered_at": datetime.now(UTC),
    }


class FeedbackQueries:
    """Mixed into `LineageStore`: the feedback batches and their rows."""

    def registered_batches(self) -> dict[str, str]:
        """Content sha256 -> partition key of every batch the sensor registered."""
        rows = self.query("SELECT sha256, cycle FROM feedback_batches WHERE sha256 IS NOT NULL")
        return dict(zip(rows["sha256"], rows["cycle"], strict=True))

    def record_batches(self, rows: list[dict]) -> None:
        """Record key -> file for new partitions (one short transaction)."""
        if not rows:
            return
        frame = pl.DataFrame(rows)

        def action(con) -> None:
            con.execute("DELETE FROM feedback_batches WHERE cycle IN ?", [frame["cycle"].to_list()])
            con.register("incoming_batches", frame.to_arrow())
            con.execute("INSERT INTO feedback_batches BY NAME SELECT * FROM incoming_batches")
            con.unregister("incoming_batches")

        self.write(action, "feedback_batches", serialize="feedback_batches")

    def lookup_batch(self, cycle: str) -> dict | None:
        rows = self.query("SELECT * FROM feedback_batches WHERE cycle = ?", [cycle])
        return None if rows.is_empty() else rows.row(0, named=True)

    def earlier_hashes(self, cycle: str) -> frozenset[str]:
        """Content hashes of rows accepted in cycles before this one."""
        rows = self.query(
            """
            SELECT DISTINCT f.content_sha256 FROM feedback f JOIN cycles c ON c.cycle = f.cycle
            WHERE c.seq < (SELECT seq FROM cycles WHERE cycle = ?)
            """,
            [cycle],
        )
        return frozenset(rows["content_sha256"].to_list())

    def batch_counts(self, cycle: str) -> tuple[int, int, int] | None:
        """(received, accepted, quarantined) as stored for the cycle; None without a record."""
        rows = self.query(
            "SELECT received, accepted, quarantined FROM feedback_batch_summary WHERE cycle = ?",
            [cycle],
        )
        if rows.is_empty() or rows["received"][0] is None:
            return None
        return rows.row(0)
