"""`flywheel cache list|clear`: the teacher's cached replies, by cycle and asset."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from flywheel_assets.environments import cli_lineage_store
from resources.teacher.ledger import cache_entries, clear_cache


def add_parser(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser("cache", help="list or clear the teacher's cached replies")
    cache.add_argument("action", choices=["list", "clear"])
    cache.add_argument("--cycle", help="only entries used by this cycle's calls")
    cache.add_argument("--asset", help="only entries used by this asset's calls (e.g. exam)")
    cache.add_argument("--all", action="store_true", help="clear: every entry")
    cache.add_argument(
        "--home", type=Path, default=Path(os.environ.get("FLYWHEEL_HOME", ".flywheel"))
    )


def run(args: argparse.Namespace) -> int:
    store = cli_lineage_store(args.home.resolve())
    if not store.exists():
        print(f"flywheel cache: no lineage store at {store.describe()}")  # noqa: T201
        return 2
    if args.action == "list":
        rows = cache_entries(store, args.cycle, args.asset)
        for r in rows.iter_rows(named=True):
            print(  # noqa: T201 - the command's output
                f"{r['key'][:16]}  {r['model']:<16} {r['output_mode']:<11} "
                f"{r['prompt_tokens'] + r['completion_tokens']:>7} tokens  "
                f"cycles={r['cycles'] or '-'} assets={r['assets'] or '-'}"
            )
        print(f"{rows.height} cached repl{'y' if rows.height == 1 else 'ies'}")  # noqa: T201
        return 0
    if args.cycle is None and args.asset is None and not args.all:
        print("flywheel cache clear: name --cycle and/or --asset, or --all")  # noqa: T201
        return 2
    removed = clear_cache(store, args.cycle, args.asset)
    print(  # noqa: T201
        f"removed {removed} cached repl{'y' if removed == 1 else 'ies'}; "
        "the next materialization sends those calls again"
    )
    return 0
