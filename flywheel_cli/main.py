"""`flywheel` command line: run the offline demo flywheel and print what it achieved."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import yaml

from flywheel_cli import audit as audit_cli
from flywheel_cli import cache as cache_cli
from flywheel_cli import cluster as cluster_cli
from flywheel_cli import serve as serve_cli
from flywheel_cli.errors import one_line, user_error_types
from flywheel_cli.instance import persistent_instance
from flywheel_cli.runner import demo_cycle_keys, run_cycles
from flywheel_core.settings import merge_overrides

log = logging.getLogger("flywheel")


OVERRIDES_FILE = "overrides.yaml"


def persist_settings(home: Path, overrides: list[str]) -> Path | None:
    """`<home>/overrides.yaml`: FLYWHEEL_CONFIG's file with the `--set` overrides merged in, the
    settings file this demo and the UI (`make ui`, the printed command) both load, so they
    compute the same code versions. Without either, the file is removed (defaults)."""
    path = home / OVERRIDES_FILE
    base = os.environ.get("FLYWHEEL_CONFIG")
    if base and Path(base).resolve() == path.resolve():
        base = None  # the file of an earlier demo: start again from the defaults
    if not overrides and not base:
        path.unlink(missing_ok=True)
        return None
    data = merge_overrides(base, overrides)
    home.mkdir(parents=True, exist_ok=True)
    header = "# Written by `flywheel demo --set ...`; `make ui` loads it (FLYWHEEL_CONFIG).\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=True))
    return path


def ui_command(home: Path, config: Path | None) -> str:
    setting = f"FLYWHEEL_CONFIG={config} " if config else ""
    return f"DAGSTER_HOME={home / 'dagster'} FLYWHEEL_HOME={home} {setting}.venv/bin/dg dev"


def run_demo(home: Path, num_cycles: int, overrides: list[str], serve: bool = True) -> int:
    from flywheel_assets.definitions import build_definitions

    home = home.resolve()
    instance = persistent_instance(home)
    os.environ["FLYWHEEL_HOME"] = str(home)
    config = persist_settings(home, overrides)
    env = {k: v for k, v in os.environ.items() if k != "FLYWHEEL_CONFIG"}
    defs = build_definitions(
        env={**env, **({"FLYWHEEL_CONFIG": str(config)} if config else {})}, home=home
    )
    started = time.perf_counter()
    if serve:
        pid = defs.resources["triton_server"].start()
        log.info(f"Triton server pid {pid}: each cycle's adapter goes live on it")
    try:
        timings = run_cycles(defs, instance, demo_cycle_keys(num_cycles))
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    print_summary(defs, timings, time.perf_counter() - started, home, config)
    if serve:
        print_served_review(defs.resources["triton_server"])
    return 0


DEMO_REVIEW = (
    "def load(path):\n    data = open(path).read()\n    return eval(data)\n",
    "eval() on file contents lets anyone who controls the file run arbitrary code.",
)


def print_served_review(server) -> None:
    """The demo's last step: what a code-review bot gets back from the served student."""
    from resources.triton.client import ReviewClient

    try:
        with ReviewClient(server.http_url, "http") as client:
            versions = client.served_versions()
            result = client.review(*DEMO_REVIEW, explain=client.can_explain())
    except Exception as exc:  # noqa: BLE001 - e.g. every candidate was blocked by the gate
        print(f"\nTriton runs on {server.http_url} but serves no version: {exc}")  # noqa: T201
        return
    probs = ", ".join(f"{k} {v:.2f}" for k, v in result.probabilities.items())
    lines = [
        "",
        f"Triton serves flywheel_student v{versions[0]} on {server.http_url} (gRPC "
        f"{server.grpc_url}). Review client answer for an eval() finding:",
        f"  severity {result.severity} ({probs})",
    ]
    if result.explanation is not None:  # None: the served version predates explanations
        text = f"explanation: {result.explanation}"
        lines.append(textwrap.fill(text, 100, initial_indent="  ", subsequent_indent="    "))
    lines.append(
        "Ask it yourself: flywheel review --code FILE --comment TEXT [--explain]; "
        "stop it: flywheel serve stop"
    )
    print("\n".join(lines))  # noqa: T201 - the command's output


def preference_lines(store) -> list[str]:
    """The explanation judge's verdicts per cycle (new adapter vs base / deployed)."""
    rows = store.preference_history()
    if rows.is_empty():
        return []
    lines = ["", f"Explanations, judged pairwise in both orders ({rows['judge'][0]}):"]
    lines.append(
        f"  {'cycle':<12} {'new adapter vs':<24} {'W/T/L':>9} {'differential (95% CI)':>24}"
    )
    for r in rows.iter_rows(named=True):
        wtl = f"{r['wins']}/{r['ties']}/{r['losses']}"
        if r["invalid"]:
            wtl += f" ({r['invalid']} skipped)"
        ci = f"{r['differential']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        lines.append(f"  {r['cycle']:<12} {r['baseline']:<24} {wtl:>9} {ci:>24}")
    return lines


def print_summary(
    defs: dg.Definitions, timings: list[dict], total: float, home: Path, config: Path | None
) -> None:
    store = defs.resources["store"]
    rows = store.heldout_history()
    first = rows.row(0, named=True)
    lines = ["", "Held-out accuracy of the student (seed corpus held-out split):"]
    lines.append(f"  {'model':<22} {'accuracy':>9} {'macro-F1':>9}")
    lines.append(f"  {'base model':<22} {first['accuracy']:>9.1%} {first['macro_f1']:>9.3f}")
    for row in rows.filter(rows["role"] == "candidate").iter_rows(named=True):
        name = f"after {row['cycle']}"
        lines.append(f"  {name:<22} {row['accuracy']:>9.1%} {row['macro_f1']:>9.3f}")
    lines += preference_lines(store)
    training = sum(t["training"] for t in timings)
    inference = sum(t["inference"] for t in timings)
    lines += [
        "",
        f"Wall time {total:.0f}s: training {training:.0f}s, student inference {inference:.0f}s, "
        f"everything else {total - training - inference:.0f}s",
        "",
        "Browse the assets, partitions and metadata in the Dagster UI (`make ui`, or):",
        f"  {ui_command(home, config)}",
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
    demo.add_argument(
        "--no-serve",
        dest="serve",
        action="store_false",
        help="do not start Triton (versions are published, not served)",
    )
    audit_cli.add_parser(sub)
    cache_cli.add_parser(sub)
    cluster_cli.add_parser(sub)
    serve_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return _dispatch(args)
    except user_error_types() as exc:  # the user's mistake: one line, exit 2 (no traceback)
        if os.environ.get("FLYWHEEL_DEBUG"):
            raise
        print(f"flywheel {args.command}: {one_line(exc)}", file=sys.stderr)  # noqa: T201
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return run_demo(args.home, args.cycles, args.overrides, args.serve)
    if args.command == "audit":
        return audit_cli.run(args)
    if args.command == "cache":
        return cache_cli.run(args)
    if args.command == "cluster":
        return cluster_cli.run(args)
    if args.command in serve_cli.COMMANDS:
        return serve_cli.COMMANDS[args.command](args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
