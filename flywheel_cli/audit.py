"""`flywheel audit`: print an adapter's lineage chain, or what a feedback batch influenced."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from flywheel_cli.store import existing_store
from flywheel_core.reporting.audit_report import render_influence
from resources.lineage.audit import AuditError
from resources.lineage.store import LineageStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser(
        "audit",
        help="lineage of an adapter (sha prefix | deployment version | cycle), or of a batch",
    )
    audit.add_argument("ref", nargs="?", help="adapter sha256 prefix, v<N> / N, or cycle key")
    audit.add_argument("--feedback", metavar="BATCH", help="cycle key, file name or sha prefix")
    audit.add_argument(
        "--home", type=Path, default=Path(os.environ.get("FLYWHEEL_HOME", ".flywheel"))
    )


def run(args: argparse.Namespace) -> int:
    store = existing_store(args.home)
    try:
        with store.reading():  # one snapshot: the adapter and its chain as of the same commit
            text = _report(store, args.ref, args.feedback)
    except AuditError as exc:
        print(f"flywheel audit: {exc}")  # noqa: T201
        return 1
    print(text)  # noqa: T201
    return 0


def _report(store: LineageStore, ref: str | None, feedback: str | None) -> str:
    if feedback:
        return render_influence(feedback, store.feedback_influence(feedback))
    adapter = store.find_adapter(ref) if ref else store.deployed_adapter()
    if adapter is None:
        raise AuditError("nothing is deployed yet; name an adapter, version or cycle")
    return store.audit_report(adapter)
