"""`flywheel audit`: print an adapter's lineage chain, or what a feedback batch influenced; with
`--as-of-version N` (DuckLake backend), as the lineage read when deployment version N was made."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from flywheel_cli.errors import UserError
from flywheel_cli.store import existing_store
from flywheel_core.reporting.audit_report import render_influence
from resources.lineage.audit import AuditError, AuditQueries
from resources.lineage.store import LineageStore
from resources.lineage.time_travel import deployment_snapshot, lineage_at


def add_parser(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser(
        "audit",
        help="lineage of an adapter (sha prefix | deployment version | cycle), or of a batch",
    )
    audit.add_argument("ref", nargs="?", help="adapter sha256 prefix, v<N> / N, or cycle key")
    audit.add_argument("--feedback", metavar="BATCH", help="cycle key, file name or sha prefix")
    audit.add_argument(
        "--as-of-version",
        type=int,
        metavar="N",
        help="read the lineage as it was when deployment version N was made (DuckLake backend; "
        "default subject: the adapter deployed as vN)",
    )
    audit.add_argument(
        "--home", type=Path, default=Path(os.environ.get("FLYWHEEL_HOME", ".flywheel"))
    )


def run(args: argparse.Namespace) -> int:
    store = existing_store(args.home)
    try:
        if args.as_of_version is None:
            with store.reading():  # one snapshot: the adapter and its chain as of the same commit
                text = _report(store, args.ref, args.feedback)
        else:
            text = _report_as_of(store, args.as_of_version, args.ref, args.feedback)
    except AuditError as exc:
        print(f"flywheel audit: {exc}")  # noqa: T201
        return 1
    print(text)  # noqa: T201
    return 0


def _report_as_of(store: LineageStore, version: int, ref: str | None, feedback: str | None) -> str:
    try:
        snapshot = deployment_snapshot(store, version)
    except NotImplementedError as exc:
        raise UserError(f"--as-of-version: {exc}") from exc
    with lineage_at(store, snapshot) as then:
        text = _report(then, ref or (None if feedback else f"v{version}"), feedback)
    when = snapshot.snapshot_time.isoformat(timespec="seconds")
    return (
        f"_As of DuckLake snapshot {snapshot.snapshot_id} ({when}): the lineage when deployment "
        f"v{version} was made._\n\n{text}"
    )


def _report(store: AuditQueries, ref: str | None, feedback: str | None) -> str:
    if feedback:
        return render_influence(feedback, store.feedback_influence(feedback))
    adapter = store.find_adapter(ref) if ref else store.deployed_adapter()
    if adapter is None:
        raise AuditError("nothing is deployed yet; name an adapter, version or cycle")
    return store.audit_report(adapter)
