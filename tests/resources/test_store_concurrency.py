"""Protects the lineage store under the default teacher concurrency: threads and processes."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import polars as pl
import pytest

from flywheel_core.settings import TeacherSettings
from resources.lineage.store import LineageStore

OPERATIONS = 25  # store operations per thread, as many as a judging thread makes in a cycle


def _work(home: str, worker: str, backend: str = "duckdb") -> int:
    """What a judging thread does: ledger appends, idempotent replaces, reads."""
    store = LineageStore(home=home, backend=backend)
    done = 0
    for i in range(OPERATIONS):
        row = {
            "cycle": worker,
            "asset": "explanation_preference",
            "call_key": f"judge/{i}",
            "cache_key": f"{worker}-{i}",
            "model": "m",
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "cost_usd": 0.0,
            "cached": False,
            "retries": 0,
            "outcome": "ok",
            "called_at": datetime.now(UTC).replace(tzinfo=None),
        }
        if i % 3 == 0:
            store.append_rows("teacher_ledger", pl.DataFrame([row]))
        elif i % 3 == 1:
            frame = pl.DataFrame({"cycle": [worker], "item_id": [str(i)], "winner": ["A"]})
            store.replace_rows("explanation_judgements", frame, cycle=worker)
        else:
            store.query("SELECT count(*) AS n FROM teacher_ledger")
        done += 1
    return done


def _threads(home: str, prefix: str, threads: int, backend: str = "duckdb") -> int:
    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(lambda t: _work(home, f"{prefix}{t}", backend), range(threads)))


@pytest.mark.parametrize("backend", ["duckdb", "ducklake"])
def test_default_concurrency_threads_share_the_store(tmp_path, backend):
    threads = TeacherSettings().max_concurrency  # the documented default, not pinned to 1
    assert threads == 4
    assert _threads(str(tmp_path), "t", threads, backend) == threads * OPERATIONS
    store = LineageStore(home=str(tmp_path), backend=backend)
    ledger = store.query("SELECT cycle, count(*) AS n FROM teacher_ledger GROUP BY 1 ORDER BY 1")
    assert ledger["n"].to_list() == [9] * threads  # i % 3 == 0 for 9 of 25
    judged = store.query("SELECT count(*) AS n FROM explanation_judgements")
    assert judged["n"][0] == threads  # each worker's replace left exactly its last row


def _process(home: str, prefix: str, threads: int, results) -> None:
    results.put(_threads(home, prefix, threads))


def test_two_processes_with_default_concurrency_share_the_store(tmp_path):
    threads = TeacherSettings().max_concurrency
    LineageStore(home=str(tmp_path)).query("SELECT 1")  # schema exists before the race
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_process, args=(str(tmp_path), p, threads, results)) for p in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(results.get(timeout=5) for _ in procs) == [threads * OPERATIONS] * 2
    ledger = LineageStore(home=str(tmp_path)).query("SELECT count(*) AS n FROM teacher_ledger")
    assert ledger["n"][0] == 2 * threads * 9
