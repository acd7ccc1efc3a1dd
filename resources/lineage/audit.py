"""Audit reads over the lineage views: an adapter's whole chain, what a batch influenced."""

from __future__ import annotations

import re

import polars as pl

from flywheel_core.reporting.audit_report import render_adapter

_VERSION = re.compile(r"^v?(\d+)$")
_SHA = re.compile(r"^[0-9a-f]{6,64}$")


class AuditError(LookupError):
    """The reference names no adapter / batch, or more than one."""


def _one(frame: pl.DataFrame, what: str) -> dict:
    if frame.is_empty():
        raise AuditError(f"no adapter matches {what}")
    if frame["adapter_sha256"].n_unique() > 1:
        found = ", ".join(f"{r['adapter_sha256'][:12]} ({r['cycle']})" for r in frame.to_dicts())
        raise AuditError(f"{what} is ambiguous: {found}")
    return frame.row(0, named=True)


class AuditQueries:
    """Mixed into `LineageStore`: the reads behind `flywheel audit` and `lineage_audit`."""

    def find_adapter(self, ref: str) -> dict:
        """An adapter_lineage row by cycle, deployment version (`3` / `v3`) or sha256 prefix."""
        by_cycle = self.query("SELECT * FROM adapter_lineage WHERE cycle = ?", [ref])
        if not by_cycle.is_empty():
            return _one(by_cycle, f"cycle {ref!r}")
        if match := _VERSION.match(ref):
            rows = self.query(
                "SELECT * FROM adapter_lineage WHERE model_version = ?", [int(match.group(1))]
            )
            if not rows.is_empty():
                return _one(rows, f"deployment version {ref!r}")
        if _SHA.match(ref.lower()):
            rows = self.query(
                "SELECT * FROM adapter_lineage WHERE starts_with(adapter_sha256, ?)", [ref.lower()]
            )
            return _one(rows, f"adapter sha256 prefix {ref!r}")
        raise AuditError(
            f"no adapter matches {ref!r} (a cycle, a deployment version or a sha prefix)"
        )

    def deployed_adapter(self) -> dict | None:
        """The adapter serving now: the latest deploy or rollback (None before the first)."""
        rows = self.query("SELECT * FROM adapter_lineage WHERE serving_now LIMIT 1")
        return None if rows.is_empty() else rows.row(0, named=True)

    def warm_start_chain(self, adapter: dict) -> list[dict]:
        """The adapter and every adapter it was warm-started from, oldest first."""
        chain = [adapter]
        while chain[-1]["init_adapter_sha256"]:
            rows = self.query(
                "SELECT * FROM adapter_lineage WHERE adapter_sha256 = ? ORDER BY seq LIMIT 1",
                [chain[-1]["init_adapter_sha256"]],
            )
            if rows.is_empty() or len(chain) > 10_000:
                break
            chain.append(rows.row(0, named=True))
        return chain[::-1]

    def feedback_influence(self, batch: str) -> pl.DataFrame:
        """The adapters (and deployments) a batch influenced: by cycle key, file name or sha."""
        rows = self.query(
            """
            SELECT * FROM feedback_influence
            WHERE batch_cycle = ? OR file_name = ? OR starts_with(batch_sha256, lower(?))
            ORDER BY adapter_seq
            """,
            [batch, batch, batch if len(batch) >= 6 else "\0"],
        )
        if rows.is_empty():
            known = self.query(
                "SELECT count(*) AS n FROM feedback_batch_summary WHERE cycle = ? OR file_name = ?",
                [batch, batch],
            )["n"][0]
            if not known:
                raise AuditError(f"no feedback batch matches {batch!r}")
        return rows

    def audit_report(self, adapter: dict) -> str:
        """Markdown lineage of an `adapter_lineage` row: facts, warm-start chain, feedback."""
        return render_adapter(
            adapter,
            self.warm_start_chain(adapter),
            self.explanation_sources(adapter["curriculum_cycle"]),
        )
