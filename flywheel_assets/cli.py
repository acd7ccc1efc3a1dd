"""`flywheel` command line: run the offline demo flywheel and print what it achieved."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import dagster as dg

from flywheel_assets import audit_cli
from flywheel_assets.runner import demo_cycle_keys, persistent_instance, run_cycles

log = logging.getLogger("flywheel")


def run_demo(home: Path, num_cycles: int, overrides: list[str]) -> int:
    from flywheel_assets.definitions import build_definitions

    home = home.resolve()
    instance = persistent_instance(home)
    os.environ["FLYWHEEL_HOME"] = str(home)
    defs = build_definitions(home=home, overrides=overrides)
    started = time.perf_counter()
    try:
        timings = run_cycles(defs, instance, demo_cycle_keys(num_cycles))
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    print_summary(defs, timings, time.perf_counter() - started, home)
    return 0


def print_summary(defs: dg.Definitions, timings: list[dict], total: float, home: Path) -> None:
    store = defs.resources["store"]
    rows = store.query(
        """
        SELECT r.cycle, r.role, r.model_ref, r.items, r.accuracy, r.macro_f1
        FROM heldout_results r JOIN cycles c USING (cycle) ORDER BY c.seq, r.role DESC
        """
    )
    first = rows.row(0, named=True)
    lines = ["", "Held-out accuracy of the student (seed corpus held-out split):"]
    lines.append(f"  {'model':<22} {'accuracy':>9} {'macro-F1':>9}")
    lines.append(f"  {'base model':<22} {first['accuracy']:>9.1%} {first['macro_f1']:>9.3f}")
    for row in rows.filter(rows["role"] == "candidate").iter_rows(named=True):
        name = f"after {row['cycle']}"
        lines.append(f"  {name:<22} {row['accuracy']:>9.1%} {row['macro_f1']:>9.3f}")
    training = sum(t["training"] for t in timings)
    inference = sum(t["inference"] for t in timings)
    lines += [
        "",
        f"Wall time {total:.0f}s: training {training:.0f}s, student inference {inference:.0f}s, "
        f"everything else {total - training - inference:.0f}s",
        "",
        "Browse the assets, partitions and metadata in the Dagster UI:",
        f"  DAGSTER_HOME={home / 'dagster'} FLYWHEEL_HOME={home} "
        ".venv/bin/dagster dev -w workspace.yaml",
    ]
    print("\n".join(lines))  # noqa: T201 - the command's output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flywheel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the offline flywheel for a few cycles")
    demo.add_argument("--cycles", type=int, default=3)
    demo.add_argument(
        "--home", type=Path, default=Path(os.environ.get("FLYWHEEL_HOME", ".flywheel"))
    )
    demo.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="settings override, e.g. --set training.steps_per_cycle=20",
    )
    audit_cli.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "demo":
        return run_demo(args.home, args.cycles, args.overrides)
    if args.command == "audit":
        return audit_cli.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
