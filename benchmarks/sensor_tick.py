"""One feedback_sensor tick over a landing zone of 10,000 files, all but 5 already seen.

Target: < 5 s. Baseline in the same run: listing the directory with os.scandir + stat, the
least work any tick must do. Run: `python -m benchmarks.sensor_tick [files] [new]`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from flywheel_assets.definitions import build_definitions
from flywheel_assets.partitions import cycles
from flywheel_assets.sensors import feedback_sensor
from flywheel_core.feedback.batches import batch_key
from flywheel_core.hashing import sha256_bytes
from resources.lineage.feedback import batch_row


def write_files(landing: Path, count: int) -> list[Path]:
    landing.mkdir(parents=True)
    paths = []
    for i in range(count):
        row = {"code": f"x = {i}", "review": f"unused variable {i}", "severity": "trivial"}
        path = landing / f"batch-{i:05d}.jsonl"
        path.write_text(json.dumps(row) + "\n")
        paths.append(path)
    return paths


def seed_state(defs: dg.Definitions, instance: dg.DagsterInstance, landing: Path, paths) -> str:
    """Register every file as the sensor would have, and return the cursor of that state."""
    files = {f.name: f for f in defs.resources["feedback_landing"].list_files()}
    rows, keys = [], []
    for path in paths:
        sha = sha256_bytes(path.read_bytes())
        key = batch_key(path.name, sha)
        rows.append(batch_row(key, files[path.name], str(path), sha))
        keys.append(key)
    defs.resources["store"].record_batches(rows)
    instance.add_dynamic_partitions(cycles.name, keys)
    return json.dumps({name: f.signature for name, f in files.items()})


def scan(landing: Path) -> int:
    return sum(1 for e in os.scandir(landing) if e.is_file() and e.stat().st_size >= 0)


def main(count: int = 10_000, new: int = 5) -> None:
    with tempfile.TemporaryDirectory() as home:
        landing = Path(home) / "feedback"
        defs = build_definitions(env={}, home=home)
        instance = dg.DagsterInstance.ephemeral()
        paths = write_files(landing, count - new)
        cursor = seed_state(defs, instance, landing, paths)
        for i in range(new):
            (landing / f"new-{i}.jsonl").write_text(
                json.dumps({"code": f"y = {i}", "review": "new", "severity": "minor"}) + "\n"
            )
        start = time.perf_counter()
        scan(landing)
        baseline = time.perf_counter() - start
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=defs.resources
        ) as context:
            start = time.perf_counter()
            result = feedback_sensor(context)
            tick = time.perf_counter() - start
        assert len(result.run_requests) == new, result
        print(f"landing zone: {count:,} files, {new} new; cursor {len(cursor) / 1e3:.0f} kB")  # noqa: T201
        print(f"baseline os.scandir + stat: {baseline * 1000:.0f} ms")  # noqa: T201
        verdict = "OK" if tick < 5 else "OVER 5 s TARGET"
        print(f"sensor tick: {tick * 1000:.0f} ms = {tick / baseline:.1f}x baseline [{verdict}]")  # noqa: T201


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
