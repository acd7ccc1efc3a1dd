"""Tokens and cost of one flywheel cycle with a 40-question exam against the scripted endpoint,
and the cache hit rate when the same cycle is materialized again.

    PYTHONPATH=. python benchmarks/teacher_cycle_cost.py [home_dir]

The student is the tiny config-built Llama (the teacher's numbers do not depend on it); every
teacher setting is the default from flywheel_core/defaults.yaml. Token counts are the stub's
(characters / 4), so they estimate what a real endpoint would bill for the same prompts.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import dagster as dg

from flywheel_assets.definitions import build_definitions
from flywheel_assets.partitions import cycles
from tests.support.openai_stub import ScriptedEndpoint

OVERRIDES = [
    "student.base_model=tiny-llama",
    "student.num_threads=1",
    "training.steps_per_cycle=2",
    "training.batch_size=4",
    "training.layers_to_train=null",
    "heldout.max_items=24",
    # The tiny student's held-out accuracy is noise: keep the deployment gate out of the figures.
    "gate.max_accuracy_drop=1.0",
    "gate.block_recall_collapse=false",
]


def run(home: Path) -> dict:
    endpoint = ScriptedEndpoint().start()
    os.environ["OPENAI_BASE_URL"] = endpoint.url
    os.environ.setdefault("OPENAI_API_KEY", "benchmark")
    env = {**os.environ, "FLYWHEEL_ENV": "prod", "OPENAI_MODEL": "stub"}
    defs = build_definitions(env=env, home=home, overrides=OVERRIDES)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("seed_corpus_job").execute_in_process(instance=instance).success
    instance.add_dynamic_partitions(cycles.name, ["bench"])
    job = defs.resolve_job_def("flywheel_cycle")
    store = defs.resources["store"]
    out = {}
    for run_name in ("first", "second"):
        endpoint.reset()
        before = store.query("SELECT count(*) AS n FROM teacher_ledger")["n"][0]
        assert job.execute_in_process(partition_key="bench", instance=instance).success
        rows = store.query("SELECT cached FROM teacher_ledger ORDER BY called_at")["cached"]
        rows = rows[int(before) :]
        out[run_name] = {
            "requests": len(endpoint.requests),
            "calls": len(rows),
            "cache_hit_rate": float(rows.mean()) if len(rows) else 0.0,
        }
    endpoint.stop()
    ledger = store.query(
        "SELECT asset, count(*) AS calls, sum(CASE WHEN cached THEN 1 ELSE 0 END) AS hits, "
        "sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens, "
        "sum(cost_usd) AS cost_usd FROM teacher_ledger GROUP BY asset, cached ORDER BY asset"
    )
    out["ledger"] = ledger.to_dicts()
    exam_rows = store.query("SELECT count(*) AS n FROM exams")["n"][0]
    out["exam_questions"] = int(exam_rows)
    return out


if __name__ == "__main__":
    home = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    sys.stdout.write(json.dumps(run(home), indent=1, default=str) + "\n")
