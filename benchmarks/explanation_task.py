"""Explanation-task benchmark (run by hand): the flywheel with and without the second task.

    python -m benchmarks.explanation_task --cycles 3
    python -m benchmarks.explanation_task --with-home A --without-home B   # reuse finished runs
    python -m benchmarks.explanation_task --with-home A --without-home B --rejudge

Runs the demo's cycles twice with the same settings and seeds, once as configured (severity +
explanations in one adapter) and once with ``training.explanation_weight=0`` (severity only),
so both train the same number of steps on the same batches of severity examples. Prints, per
cycle, the held-out severity accuracy and macro-F1 of both (the multi-task run must not lose
severity accuracy) and the explanation judge's preference of each run's adapter over the base
model (wins / ties / losses, differential, 95% CI), plus the training time of each run: the
ratio is the price of the second task. ``--rejudge`` re-materializes ``explanation_preference``
for every cycle of reused runs first (after a change to the judge or to the decoding).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from flywheel_assets.definitions import build_definitions
from flywheel_assets.partitions import cycles
from flywheel_cli.instance import persistent_instance
from flywheel_cli.runner import demo_cycle_keys, run_cycles

log = logging.getLogger("benchmarks.explanation_task")
OFF = "training.explanation_weight=0"


def run(home: Path, cycles: int, overrides: list[str]) -> None:
    defs = build_definitions(home=home, overrides=overrides)
    run_cycles(defs, persistent_instance(home), demo_cycle_keys(cycles))


def rejudge(home: Path) -> None:
    """explanation_preference again for every cycle of a finished run, with the current code."""
    defs = build_definitions(home=home)
    instance = persistent_instance(home)
    job = dg.define_asset_job(
        "rejudge", selection=["explanation_preference"], partitions_def=cycles
    )
    job = dg.Definitions(assets=defs.assets, resources=defs.resources, jobs=[job])
    for key in instance.get_dynamic_partitions(cycles.name):
        log.info("%s: judging %s again", home, key)
        result = job.resolve_job_def("rejudge").execute_in_process(
            partition_key=key, instance=instance
        )
        assert result.success


def collect(home: Path) -> pl.DataFrame:
    """Per cycle: candidate accuracy / macro-F1, preference vs base, training seconds."""
    store = build_definitions(home=home).resources["store"]
    return store.query(
        """
        SELECT c.seq, r.cycle, r.accuracy, r.macro_f1, a.steps, a.train_seconds,
               p.wins, p.ties, p.losses, p.differential, p.ci_low, p.ci_high, p.judge
        FROM heldout_results r
        JOIN cycles c USING (cycle)
        JOIN adapters a USING (cycle)
        LEFT JOIN preference_results p ON p.cycle = r.cycle AND p.baseline = 'base model'
        WHERE r.role = 'candidate' AND coalesce(r.eval_set, 'seed') = 'seed' ORDER BY c.seq
        """
    )


def report(with_task: pl.DataFrame, without: pl.DataFrame) -> str:
    lines = [
        "| cycle | steps | severity acc / F1, severity only | severity acc / F1, + explanations "
        "| acc diff (points) | preference vs base, severity only | preference vs base, "
        "+ explanations |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for a, b in zip(without.iter_rows(named=True), with_task.iter_rows(named=True), strict=True):
        lines.append(
            f"| {a['cycle']} | {a['steps']} | {a['accuracy']:.1%} / {a['macro_f1']:.3f} | "
            f"{b['accuracy']:.1%} / {b['macro_f1']:.3f} | "
            f"{100 * (b['accuracy'] - a['accuracy']):+.1f} | {_pref(a)} | {_pref(b)} |"
        )
    t_off, t_on = without["train_seconds"].sum(), with_task["train_seconds"].sum()
    lines += [
        "",
        f"training time: severity only {t_off:.0f}s, with explanations {t_on:.0f}s "
        f"(ratio {t_on / t_off:.2f}x); judge: {with_task['judge'][0]}",
    ]
    return "\n".join(lines)


def _pref(row: dict) -> str:
    if row["differential"] is None:
        return "n/a"
    return (
        f"{row['wins']}/{row['ties']}/{row['losses']} {row['differential']:+.2f} "
        f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--with-home", type=Path, help="a finished run with the task on")
    parser.add_argument("--without-home", type=Path, help="a finished run with it off")
    parser.add_argument("--rejudge", action="store_true", help="judge reused runs again")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    root = Path(tempfile.mkdtemp(prefix="explanation-bench-"))
    with_home = args.with_home or root / "with"
    without_home = args.without_home or root / "without"
    if args.with_home is None:
        run(with_home, args.cycles, [])
    if args.without_home is None:
        run(without_home, args.cycles, [OFF])
    if args.rejudge:
        for home in (with_home, without_home):
            rejudge(home)
    print(report(collect(with_home), collect(without_home)))  # noqa: T201 - the report


if __name__ == "__main__":
    main()
