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
        """An adapter_lineage row by cycle, deployment version (`3` / `v3`) or sha256 prefix,
        in that order of precedence. One read of the view for all three."""
        version = int(match.group(1)) if (match := _VERSION.match(ref)) else None
        sha = ref.lower() if _SHA.match(ref.lower()) else None
        flags = ["by_cycle", "by_version", "by_sha"]
        rows = self.query(
            """
            SELECT * FROM (
                SELECT *, cycle = $1 AS by_cycle,
                       coalesce(model_version = $2, false) AS by_version,
                       coalesce(starts_with(adapter_sha256, $3), false) AS by_sha
                FROM adapter_lineage)
            WHERE by_cycle OR by_version OR by_sha
            """,
            [ref, version, sha],
        )
        matches = {flag: rows.filter(pl.col(flag)).drop(flags) for flag in flags}
        if not matches["by_cycle"].is_empty():
            return _one(matches["by_cycle"], f"cycle {ref!r}")
        if version is not None and not matches["by_version"].is_empty():
            return _one(matches["by_version"], f"deployment version {ref!r}")
        if sha is not None:
            return _one(matches["by_sha"], f"adapter sha256 prefix {ref!r}")
        raise AuditError(
            f"no adapter matches {ref!r} (a cycle, a deployment version or a sha prefix)"
        )

    def deployed_adapter(self) -> dict | None:
        """The adapter serving now: the latest deploy or rollback (None before the first)."""
        rows = self.query("SELECT * FROM adapter_lineage WHERE serving_now LIMIT 1")
        return None if rows.is_empty() else rows.row(0, named=True)

    def warm_start_chain(self, adapter: dict) -> list[dict]:
        """The adapter and every adapter it was warm-started from, oldest first.

        Two reads whatever the chain's length: the warm-start links (adapters only), then the
        chain's `adapter_lineage` rows (one query per link scanned all feedback each time)."""
        links: dict[str, tuple[str, str | None]] = {}  # sha -> (its first cycle, warm start)
        for sha, cycle, init in self.query(
            "SELECT a.adapter_sha256, a.cycle, a.init_adapter_sha256 "
            "FROM adapters a JOIN cycles c USING (cycle) ORDER BY c.seq"
        ).iter_rows():
            links.setdefault(sha, (cycle, init))
        path: list[tuple[str, str]] = []  # (cycle, sha) of each ancestor, newest first
        init = adapter["init_adapter_sha256"]
        while init and init in links and len(path) < 10_000:
            path.append((links[init][0], init))
            init = links[init][1]
        if not path:
            return [adapter]
        rows = self.query(
            "SELECT * FROM adapter_lineage WHERE list_contains(?, cycle) ORDER BY seq",
            [sorted({cycle for cycle, _ in path})],
        )
        found: dict[tuple[str, str], dict] = {}
        for row in rows.iter_rows(named=True):
            found.setdefault((row["cycle"], row["adapter_sha256"]), row)
        chain = [adapter]
        for key in path:
            if key not in found:
                break
            chain.append(found[key])
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
        with self.reading():
            return render_adapter(
                adapter,
                self.warm_start_chain(adapter),
                self.explanation_sources(adapter["curriculum_cycle"]),
            )
