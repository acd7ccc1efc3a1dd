"""Protects the multi-process deployment: Dagster on Postgres, lineage in a DuckLake (Postgres
catalog, Parquet on S3), every run in its own process launched by a real `dagster-daemon`.

Three feedback files land at once; the sensor and the automation turn three cycles, one after
another, in separate run processes; every row is conserved, the last deployment's audit chain
names all three batches, and no local DuckDB file is ever written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import dagster as dg
import pytest
import yaml

from flywheel_assets.definitions import build_definitions
from flywheel_assets.environments import lineage_store
from flywheel_cli.cluster import write_cluster_instance, write_workspace
from flywheel_cli.local_servers import stop_pid
from flywheel_core.settings import merge_overrides
from tests.conftest import TINY_OVERRIDES
from tests.support.feedback_files import feedback_jsonl

REPO = Path(__file__).resolve().parents[2]
BATCHES = ["team-a.jsonl", "team-b.jsonl", "team-c.jsonl"]
CYCLE_TIMEOUT_S = 1500  # three cycles, each run a fresh process, on a loaded 2-core machine


def _dagster_database(server, name: str) -> str:
    server.create_database(name)
    return server.sqlalchemy_uri(name)


@pytest.fixture()
def cluster_env(postgres_server, lake_s3, tmp_path, cache_dir) -> dict[str, str]:
    name = f"c{uuid.uuid4().hex[:8]}"
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(merge_overrides(None, TINY_OVERRIDES)))
    dagster_home = tmp_path / "dagster"
    write_cluster_instance(dagster_home)
    return {
        "FLYWHEEL_ENV": "local",
        "FLYWHEEL_HOME": str(tmp_path / "home"),
        "FLYWHEEL_CACHE": str(cache_dir),
        "FLYWHEEL_CONFIG": str(config),
        "DAGSTER_HOME": str(dagster_home),
        "FLYWHEEL_DAGSTER_POSTGRES_URL": _dagster_database(postgres_server, f"dagster_{name}"),
        "FLYWHEEL_LINEAGE": "ducklake",
        "FLYWHEEL_LINEAGE_CATALOG": postgres_server.create_database(f"lineage_{name}"),
        "FLYWHEEL_STORAGE": "s3",
        "FLYWHEEL_S3_BUCKET": "lake",
        "FLYWHEEL_S3_PREFIX": name,
        "FLYWHEEL_S3_ENDPOINT_URL": lake_s3["s3_endpoint_url"],
        "AWS_REGION": lake_s3["s3_region"],
        "AWS_ACCESS_KEY_ID": lake_s3["s3_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": lake_s3["s3_secret_access_key"],
        "PYTHONPATH": str(REPO),  # the run processes import this checkout
        "OMP_NUM_THREADS": "1",
    }


def _daemon(env: dict[str, str], log: Path) -> subprocess.Popen:
    workspace = write_workspace(log.parent / "workspace.yaml")
    args = [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(workspace)]
    with open(log, "ab") as out:
        return subprocess.Popen(
            args,
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for(done, what: str, timeout_s: float, daemon: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise AssertionError(f"dagster-daemon exited: {log.read_text()[-3000:]}")
        if result := done():
            return result
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}; daemon log: {log.read_text()[-3000:]}")


def _materialized(instance: dg.DagsterInstance, asset: str) -> set[str]:
    return set(instance.get_materialized_partitions(dg.AssetKey(asset)))


# Slow: every run is a fresh process that loads the code location (torch, transformers) and the
# sensors tick every 30 s; 19 min on the shared 2-core machine it was written on (most of it
# waiting for CPU).
@pytest.mark.slow
def test_three_batches_turn_three_cycles_in_separate_run_processes(
    cluster_env, tmp_path, monkeypatch
):
    env = cluster_env
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FLYWHEEL_LINEAGE_CATALOG"):
        monkeypatch.setenv(name, env[name])  # read through EnvVar when the seed run starts
    monkeypatch.setenv("FLYWHEEL_DAGSTER_POSTGRES_URL", env["FLYWHEEL_DAGSTER_POSTGRES_URL"])
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        defs = build_definitions(env=env, home=env["FLYWHEEL_HOME"])
        seed = defs.resolve_job_def("seed_corpus_job").execute_in_process(instance=instance)
        assert seed.success
        client = boto3.client(
            "s3",
            endpoint_url=env["FLYWHEEL_S3_ENDPOINT_URL"],
            region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        for i, name in enumerate(BATCHES):  # three teams' files land at once
            key = f"{env['FLYWHEEL_S3_PREFIX']}/feedback/{name}"
            client.put_object(Bucket="lake", Key=key, Body=feedback_jsonl(f"team-{i}"))
        log = tmp_path / "daemon.log"
        daemon = _daemon(env, log)
        try:
            deployed = _wait_for(
                lambda: (
                    len(_materialized(instance, "deployed_student")) == 3
                    and _materialized(instance, "deployed_student")
                ),
                "three deployed cycles",
                CYCLE_TIMEOUT_S,
                daemon,
                log,
            )
        finally:
            stop_pid(daemon.pid, signal.SIGTERM, timeout_s=30, group=True)
        runs = instance.get_run_records(dg.RunsFilter(tags={"flywheel/run": "automation"}))
    cycle_runs = sorted(
        (r for r in runs if r.dagster_run.tags.get("dagster/partition")),
        key=lambda r: r.start_time,
    )
    assert {r.dagster_run.tags["dagster/partition"] for r in cycle_runs} == deployed
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in cycle_runs)
    for earlier, later in zip(cycle_runs, cycle_runs[1:], strict=False):
        assert earlier.end_time <= later.start_time, "two cycles of one flywheel overlapped"

    store = lineage_store(env, Path(env["FLYWHEEL_HOME"]), resolved=True)
    order = store.query("SELECT cycle FROM cycles ORDER BY seq")["cycle"].to_list()
    assert set(order) == deployed and len(order) == 3
    for cycle in order:  # every row conserved: received = accepted + quarantined = stored
        received, accepted, quarantined = store.batch_counts(cycle)
        assert received == accepted + quarantined == 4
    last = store.deployed_adapter()
    assert last["cycle"] == order[-1]
    assert {b["file"] for b in last["feedback_batches"]} == set(BATCHES)
    written = [p for p in tmp_path.rglob("*") if p.suffix in (".duckdb", ".ducklake")]
    assert not written, f"a local lineage file was written: {written}"
