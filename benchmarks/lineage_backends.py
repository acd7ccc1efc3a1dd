"""The lineage store on its two backends, same run: the embedded DuckDB file vs a DuckLake with
its catalog in Postgres and its data as Parquet on S3 (embedded Postgres + `weed mini`, both
started here on loopback and stopped by pid).

Per backend: populating 1M feedback rows (plus cycles, exams, curricula, adapters, deployments:
benchmarks/audit_query.py's synthetic lineage), the audit queries (median of 5 after a warm-up:
the whole audit of the serving adapter as `flywheel audit` prints it, then single lookups),
then 4 writer processes at once, each rewriting its own cycle's feedback partition
(delete-then-insert, 1,000 rows) `WRITES` times and appending ledger rows: rows/s over the wall
time, conflict retries, and whether every row is there. The DuckLake is measured first.

Run: `python -m benchmarks.lineage_backends [rows] [ducklake|duckdb]` (via /work/bin/heavy).
"""

from __future__ import annotations

import multiprocessing
import queue
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from benchmarks.audit_query import CYCLES, populate, timed
from flywheel_cli.local_servers import postgres, s3_client, weed_mini
from resources.lineage.store import LineageStore

WRITERS = 4
WRITES = 5
ROWS_PER_WRITE = 1_000
WRITERS_TIMEOUT_S = 600
CREDENTIALS = {"s3_access_key_id": "bench-key", "s3_secret_access_key": "bench-secret"}


def _partition(cycle: str, round_no: int) -> pl.DataFrame:
    n = ROWS_PER_WRITE
    return pl.DataFrame(
        {
            "cycle": [cycle] * n,
            "item_id": [f"{cycle}-{round_no}-{i}" for i in range(n)],
            "line_no": list(range(1, n + 1)),
            "code": [f"x = {i}" for i in range(n)],
            "review": ["review"] * n,
            "severity": ["minor"] * n,
        }
    )


def _writer(settings: dict, worker: int, start, results) -> None:
    from resources.lineage.store import WRITE_COUNTERS

    store = LineageStore(**settings)
    store.query("SELECT 1")  # attach (and load extensions) before the clock starts
    cycle = f"writer-{worker}"
    start.wait()
    began = time.perf_counter()
    error = None
    try:
        store.register_cycle(cycle)
        for i in range(WRITES):
            store.replace_rows("feedback", _partition(cycle, i), cycle=cycle)
            store.append_rows(
                "teacher_ledger", pl.DataFrame({"cycle": [cycle], "call_key": [f"{worker}/{i}"]})
            )
    except Exception as exc:  # reported, not hidden: a writer that gave up
        error = f"{type(exc).__name__}: {str(exc)[:160]}"
    results.put((worker, time.perf_counter() - began, WRITE_COUNTERS.retries, error))


def concurrent_writers(settings: dict) -> dict:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(WRITERS + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(settings, w, start, results)) for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    start.wait()
    began = time.perf_counter()
    done = []
    for _ in procs:
        try:
            done.append(results.get(timeout=WRITERS_TIMEOUT_S))
        except queue.Empty:  # a writer hung: report it, stop the rest
            break
    wall = time.perf_counter() - began
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join()
    done += [(None, wall, 0, "did not finish") for _ in range(WRITERS - len(done))]
    store = LineageStore(**settings)
    rows = store.query("SELECT count(*) AS n FROM feedback WHERE starts_with(cycle, 'writer-')")[
        "n"
    ][0]
    errors = [e for *_, e in done if e]
    for error in errors:
        print(f"  writer failed: {error}", flush=True)  # noqa: T201
    return {
        "wall_s": wall,
        "rows_per_s": WRITERS * WRITES * ROWS_PER_WRITE / wall,
        "retries": sum(r for _, _, r, _ in done),
        "writers_failed": len(errors),
        "rows_ok": rows == (WRITERS - len(errors)) * ROWS_PER_WRITE,
    }


def measure(name: str, settings: dict, rows: int) -> dict:
    """Each figure is printed as soon as it is measured (a long run may be stopped midway)."""
    store = LineageStore(**settings)
    figures: dict = {}

    def record(key: str, value) -> None:
        figures[key] = value
        print(f"{name}: {key} = {_fmt(value)}", flush=True)  # noqa: T201

    began = time.perf_counter()
    populate(store, rows)
    record("populate_s", time.perf_counter() - began)
    latest = f"c{CYCLES}"
    sha = store.adapter("c100")["adapter_sha256"][:10]
    scan = "SELECT cycle, count(*) FROM feedback GROUP BY 1"
    record("baseline_scan_s", timed(lambda: store.query(scan)))
    record("audit_serving_s", timed(lambda: _audit_serving(store)))
    record("audit_latest_s", timed(lambda: store.find_adapter(latest)))
    record("audit_sha_prefix_s", timed(lambda: store.find_adapter(sha)))
    record("feedback_influence_s", timed(lambda: store.feedback_influence("c1")))
    for key, value in concurrent_writers(settings).items():
        record(key, value)
    return figures


def _audit_serving(store: LineageStore) -> str:
    """What `flywheel audit` (no argument) and the lineage_audit asset do: the adapter serving
    now, its whole warm-start chain (200 adapters here) and the markdown report."""
    with store.reading():
        return store.audit_report(store.deployed_adapter())


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def main(rows: int = 1_000_000, only: str | None = None) -> None:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with postgres(root / "pgdata") as pg, weed_mini(root / "weed") as endpoint:
            s3_client(endpoint, CREDENTIALS).create_bucket(Bucket="lake")
            lake_settings = {
                "home": str(root / "lake-home"),
                "backend": "ducklake",
                "catalog": pg.create_database("lineage_bench"),
                "data_path": "s3://lake/lineage/",
                "s3_endpoint_url": endpoint,
                "s3_region": "us-east-1",
                **CREDENTIALS,
            }
            if only in (None, "ducklake"):
                results["ducklake"] = measure("ducklake (postgres + s3)", lake_settings, rows)
            if only in (None, "duckdb"):
                results["duckdb"] = measure("duckdb file", {"home": str(root / "file")}, rows)
    if len(results) < 2:
        return
    file, lake = results["duckdb"], results["ducklake"]
    print(f"\n{rows:,} feedback rows; {WRITERS} writers x {WRITES} rewrites of {ROWS_PER_WRITE:,}")  # noqa: T201
    print(f"{'measure':<24}{'duckdb file':>14}{'ducklake':>14}{'ratio':>9}")  # noqa: T201
    for key in file:
        a, b = file[key], lake[key]
        ratio = f"{b / a:.1f}x" if isinstance(a, float) and a else ""
        print(f"{key:<24}{_fmt(a):>14}{_fmt(b):>14}{ratio:>9}")  # noqa: T201
    verdict = "OK" if lake["audit_serving_s"] < 2.0 else "OVER the 2 s target"
    print(f"DuckLake audit of the serving adapter: {lake['audit_serving_s']:.3f} s [{verdict}]")  # noqa: T201


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000,
        sys.argv[2] if len(sys.argv) > 2 else None,  # ducklake | duckdb: one backend only
    )
