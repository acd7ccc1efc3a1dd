"""Process start-up in a flywheel cycle, and the code location's load time: before and after.

Before: Dagster's default multiprocess executor (each step a new process that imports the code
location, and torch / transformers where it scores or trains). After: the in-process executor the
flywheel now uses (one process per run; the fine-tune is still a Pipes subprocess). Both run in
the same benchmark, on the same flywheel, alternating, with `execute_job` on a persistent
instance as the daemon's run worker would. Printed per cycle: the run's wall time, the sum of its
steps' times (STEP_START -> STEP_SUCCESS), and wall / sum (1.0 = no overhead); the overhead
share (1 - sum / wall) is what process start-up and orchestration cost.

The code location's load time is `from flywheel_assets.definitions import defs; defs()` in a
fresh interpreter (median of 3), and whether that imported torch / transformers.

Run: `python -m benchmarks.cycle_overhead [--pairs 2] [--real]` from the repository root
(default: the config-built tiny Llama, seconds per step, where start-up shows most; `--real`:
SmolLM2 with the default settings, minutes per cycle).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

from flywheel_assets.definitions import build_definitions
from flywheel_assets.partitions import cycles
from flywheel_cli.instance import write_instance_config
from flywheel_core.tiny import TINY_OVERRIDES

# Every measured cycle fine-tunes (the stopping rule would skip later ones).
ALWAYS_TRAIN = ["training.plateau_cycles=null"]


def multiprocess_cycle_job() -> dg.JobDefinition:
    """Before: the cycle job with Dagster's default multiprocess executor (reconstructable)."""
    defs = build_definitions(executor=dg.multiprocess_executor)
    return defs.resolve_job_def("flywheel_cycle")


def in_process_cycle_job() -> dg.JobDefinition:
    """After: the cycle job as the flywheel defines it (in-process executor)."""
    return build_definitions().resolve_job_def("flywheel_cycle")


def load_seconds() -> tuple[float, bool]:
    code = (
        "import sys, time; t = time.perf_counter();"
        "from flywheel_assets.definitions import defs; defs();"
        "print(time.perf_counter() - t, 'torch' in sys.modules or 'transformers' in sys.modules)"
    )
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        runs.append((float(out[0]), out[1] == "True"))
    return statistics.median(r[0] for r in runs), any(r[1] for r in runs)


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> float:
    stats = instance.get_run_step_stats(run_id)
    return sum((s.end_time or s.start_time) - s.start_time for s in stats if s.start_time)


def run_cycle(instance: dg.DagsterInstance, job_fn, key: str) -> dict:
    instance.add_dynamic_partitions(cycles.name, [key])
    started = time.perf_counter()
    with dg.execute_job(
        dg.reconstructable(job_fn), instance=instance, tags={"dagster/partition": key}
    ) as result:
        wall = time.perf_counter() - started
        ok = result.success or any(
            not e.passed for e in result.get_asset_check_evaluations()
        )  # a gate-blocked cycle is a valid outcome
        run_id = result.run_id
    if not ok:
        raise RuntimeError(f"cycle {key} failed (run {run_id})")
    steps = step_seconds(instance, run_id)
    return {"cycle": key, "wall": wall, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2, help="cycles per executor")
    parser.add_argument("--real", action="store_true", help="SmolLM2, default settings")
    args = parser.parse_args()

    load, heavy = load_seconds()
    home = Path(tempfile.mkdtemp(prefix="cycle-overhead-"))
    config = home / "settings.yaml"
    from flywheel_core.settings import merge_overrides

    overrides = ALWAYS_TRAIN + ([] if args.real else TINY_OVERRIDES)
    config.write_text(yaml.safe_dump(merge_overrides(None, overrides)))
    os.environ.update(
        FLYWHEEL_HOME=str(home), FLYWHEEL_CONFIG=str(config), DAGSTER_HOME=str(home / "dagster")
    )
    write_instance_config(home / "dagster")
    with dg.DagsterInstance.get() as instance:
        defs = build_definitions()
        assert defs.resolve_job_def("seed_corpus_job").execute_in_process(instance=instance).success
        run_cycle(instance, in_process_cycle_job, "bootstrap")  # warm-up: caches, first adapter
        rows = {"multiprocess (before)": [], "in-process (after)": []}
        for i in range(args.pairs):
            rows["multiprocess (before)"].append(
                run_cycle(instance, multiprocess_cycle_job, f"mp-{i + 1}")
            )
            rows["in-process (after)"].append(
                run_cycle(instance, in_process_cycle_job, f"ip-{i + 1}")
            )

    print(f"code location load: {load:.2f} s (torch/transformers imported: {heavy})")  # noqa: T201
    print(
        f"{'executor':<22} {'cycle':<6} {'wall s':>8} {'steps s':>8} {'wall/steps':>11} "  # noqa: T201
        f"{'overhead':>9}"
    )
    summary = {}
    for name, cycles_run in rows.items():
        for r in cycles_run:
            print(  # noqa: T201
                f"{name:<22} {r['cycle']:<6} {r['wall']:>8.1f} {r['steps']:>8.1f} "
                f"{r['wall'] / r['steps']:>11.2f} {1 - r['steps'] / r['wall']:>9.0%}"
            )
        wall = sum(r["wall"] for r in cycles_run)
        steps = sum(r["steps"] for r in cycles_run)
        summary[name] = (wall, steps)
    before, after = summary["multiprocess (before)"], summary["in-process (after)"]
    print(  # noqa: T201
        f"\nwall/steps: before {before[0] / before[1]:.2f}, after {after[0] / after[1]:.2f}; "
        f"overhead share: before {1 - before[1] / before[0]:.0%}, after "
        f"{1 - after[1] / after[0]:.0%}; cycle wall after/before {after[0] / before[0]:.2f}"
    )


if __name__ == "__main__":
    main()
