"""Audit queries over 1 million synthetic feedback rows in DuckDB (target: < 1 s each).

Baseline in the same run: one plain GROUP BY scan of the feedback table, the least work any
audit that counts rows per batch must do. Run: `python -m benchmarks.audit_query [rows]`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from resources.lineage.store import LineageStore

CYCLES = 200
# Tables that gained columns since their first release: the synthetic rows fill the first ones.
COLUMNS = {
    "adapters": "(cycle, adapter_sha256, uri, base_model, init_adapter_sha256, curriculum_cycle, "
    "curriculum_size, steps, final_loss, train_seconds, config, created_at, asset_version)",
    "deployments": "(cycle, adapter_sha256, model_name, model_version, repository, deployed_at, "
    "asset_version, served, action)",
}


def populate(store: LineageStore, rows: int) -> None:
    """Cycles, batches, 1M feedback rows, exams, evaluations, curricula, adapters, deployments."""
    with store.connect() as con:
        con.execute(
            "INSERT INTO cycles SELECT 'c' || i, i, now() FROM range(1, ?) t(i)", [CYCLES + 1]
        )
        con.execute(
            """INSERT INTO feedback_batches (cycle, file_name, sha256, received, accepted,
               quarantined) SELECT 'c' || i, 'batch-' || i || '.jsonl', md5('b' || i),
               ? // ?, ? // ?, 0 FROM range(1, ?) t(i)""",
            [rows, CYCLES, rows, CYCLES, CYCLES + 1],
        )
        con.execute(
            """INSERT INTO feedback (cycle, item_id, line_no, code, review, severity,
               content_sha256) SELECT 'c' || (1 + i % ?), 'feedback:' || i, i, 'x = ' || i,
               'review ' || i, ['critical','major','minor','trivial'][1 + i % 4], md5(i::VARCHAR)
               FROM range(?) t(i)""",
            [CYCLES, rows],
        )
        con.execute(
            """INSERT INTO feedback_quarantine (cycle, line_no, raw, reason)
               SELECT 'c' || (1 + i % ?), i, 'junk', 'not valid JSON' FROM range(? // 100) t(i)""",
            [CYCLES, rows],
        )
        for table, sql in {
            "exams": "'c' || i, 'exam-' || i, q, 'i' || q, 'seed', 'code', 'r', 'minor', "
            "'corpus-teacher', md5('p'), '1' FROM range(1, ?) t(i), range(40) s(q)",
            "evaluations": "'c' || i, 'exam-' || i, 0.5, 0.4, 5, 'f', '{}', '[]', "
            "'corpus-teacher', md5('e'), '1' FROM range(1, ?) t(i)",
            "adapters": "'c' || i, md5('a' || i), 's3://b/a/' || md5('a' || i), 'smollm2', "
            "CASE WHEN i > 1 THEN md5('a' || (i - 1)) END, 'c' || i, 100 * i, 60, 0.5, 10, '{}', "
            "now(), '1' FROM range(1, ?) t(i)",
            "deployments": "'c' || i, md5('a' || i), 'flywheel_student', i, 'repo', now(), '1', "
            "true, 'deploy' "
            "FROM range(1, ?) t(i)",
        }.items():
            columns = COLUMNS.get(table, "")
            con.execute(f"INSERT INTO {table} {columns} SELECT {sql}", [CYCLES + 1])
        con.execute(
            """INSERT INTO curricula (cycle, example_id, item_id, asset_version)
               SELECT 'c' || i, 'e' || j, 'i' || j, '1' FROM range(1, ?) t(i), range(100) s(j)""",
            [CYCLES + 1],
        )


def timed(fn, repeat: int = 5) -> float:
    """Median wall seconds of `fn` over `repeat` calls (after one warm-up)."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(rows: int = 1_000_000) -> None:
    with tempfile.TemporaryDirectory() as home:
        store = LineageStore(home=home)
        start = time.perf_counter()
        populate(store, rows)
        size_mb = Path(store.db_path).stat().st_size / 1e6
        print(
            f"populated {rows:,} feedback rows in {time.perf_counter() - start:.1f}s "
            f"({size_mb:.0f} MB)"
        )  # noqa: T201
        baseline = timed(lambda: store.query("SELECT cycle, count(*) FROM feedback GROUP BY 1"))
        latest = f"c{CYCLES}"
        figures = {
            "adapter_lineage (latest adapter, by cycle)": timed(lambda: store.find_adapter(latest)),
            "adapter_lineage (by sha prefix)": timed(
                lambda: store.find_adapter(store.adapter("c100")["adapter_sha256"][:10])
            ),
            "feedback_influence (first batch)": timed(lambda: store.feedback_influence("c1")),
        }
        print(f"baseline GROUP BY scan of feedback: {baseline * 1000:.0f} ms")  # noqa: T201
        for name, seconds in figures.items():
            verdict = "OK" if seconds < 1.0 else "OVER 1 s TARGET"
            print(
                f"{name}: {seconds * 1000:.0f} ms = {seconds / baseline:.1f}x baseline [{verdict}]"
            )  # noqa: T201


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
