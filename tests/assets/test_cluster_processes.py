"""Protects the multi-process deployment: Dagster on Postgres, lineage in a DuckLake (Postgres
catalog, Parquet on S3), every run in its own process launched by a real `dagster-daemon`.

One daemon serves the module (the servers and the code location start once). Three feedback
files land at once; the sensor and the automation turn three cycles, one after another, in
separate run processes; every row is conserved, the last deployment's audit chain names all
three batches, and no local DuckDB file is ever written. Then a fourth batch's run process is
SIGKILLed while it trains its adapter: Dagster's run retry finishes the cycle, and the lineage
holds each of its rows once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from flywheel_assets.definitions import build_definitions
from flywheel_assets.environments import lineage_store
from flywheel_cli.cluster import write_cluster_instance, write_workspace
from flywheel_cli.local_servers import s3_client, stop_pid
from flywheel_core.processes import alive
from flywheel_core.settings import merge_overrides
from tests.conftest import TINY_OVERRIDES
from tests.support.feedback_files import feedback_jsonl

REPO = Path(__file__).resolve().parents[2]
BATCHES = ["team-a.jsonl", "team-b.jsonl", "team-c.jsonl"]
KILLED_BATCH = "team-d.jsonl"
CYCLE_TIMEOUT_S = 1500  # three cycles, each run a fresh process, on a loaded 2-core machine
RETRY_TIMEOUT_S = 900  # the killed cycle: the attempt up to training, then the retry
FINISH_TIMEOUT_S = 120  # a run's last steps after deployed_student materialized
KILLED_STEP = "lora_adapter"  # the cycle's longest step: the fine-tune subprocess


def _dagster_database(server, name: str) -> str:
    server.create_database(name)
    return server.sqlalchemy_uri(name)


def _cluster_env(postgres_server, lake_s3, root: Path, cache_dir: Path) -> dict[str, str]:
    name = f"c{uuid.uuid4().hex[:8]}"
    config = root / "settings.yaml"
    # No plateau stop: a random tiny model's held-out accuracy is flat, and the stopping rule
    # would re-use the third cycle's adapter in the fourth (killed) cycle instead of training and
    # deploying one.
    overrides = [*TINY_OVERRIDES, "training.plateau_cycles=null"]
    config.write_text(yaml.safe_dump(merge_overrides(None, overrides)))
    dagster_home = root / "dagster"
    write_cluster_instance(dagster_home)
    return {
        "FLYWHEEL_ENV": "local",
        "FLYWHEEL_HOME": str(root / "home"),
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


@dataclass
class Cluster:
    env: dict[str, str]
    instance: dg.DagsterInstance
    daemon: subprocess.Popen
    log: Path
    root: Path

    def land(self, name: str, data: bytes) -> None:
        """A team's feedback file lands in the S3 landing zone."""
        key = f"{self.env['FLYWHEEL_S3_PREFIX']}/feedback/{name}"
        s3_client(self.env["FLYWHEEL_S3_ENDPOINT_URL"], self.env).put_object(
            Bucket="lake", Key=key, Body=data
        )

    def wait_for(self, done, what: str, timeout_s: float, poll_s: float = 2.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise AssertionError(f"dagster-daemon exited: {self.log.read_text()[-3000:]}")
            if result := done():
                return result
            time.sleep(poll_s)
        tail = self.log.read_text()[-3000:]
        raise AssertionError(f"timed out waiting for {what}; daemon log: {tail}")

    def finished(self, runs: Callable[[], list[dg.RunRecord]], what: str) -> list[dg.RunRecord]:
        """``runs()`` once every run it returns has finished: ``deployed_student``'s
        materialization lands a moment before its run's own end."""
        return self.wait_for(
            lambda: (found := runs()) and all(r.dagster_run.is_finished for r in found) and found,
            what,
            FINISH_TIMEOUT_S,
        )

    def deployed(self) -> set[str]:
        return set(self.instance.get_materialized_partitions(dg.AssetKey("deployed_student")))

    def store(self):
        return lineage_store(self.env, Path(self.env["FLYWHEEL_HOME"]), resolved=True)


# Slow: every run is a fresh process that loads the code location (torch, transformers) and the
# sensors tick every 30 s; 19 min for the three cycles on the shared 2-core machine it was
# written on (most of it waiting for CPU).
@pytest.fixture(scope="module")
def cluster(postgres_server, lake_s3, cache_dir, tmp_path_factory) -> Iterator[Cluster]:
    """The seeded flywheel on Dagster's Postgres instance with a running `dagster-daemon`."""
    root = tmp_path_factory.mktemp("cluster")
    env = _cluster_env(postgres_server, lake_s3, root, cache_dir)
    with pytest.MonkeyPatch.context() as patch:
        for name in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "FLYWHEEL_LINEAGE_CATALOG",  # read through EnvVar when the seed run starts
            "FLYWHEEL_DAGSTER_POSTGRES_URL",
        ):
            patch.setenv(name, env[name])
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            defs = build_definitions(env=env, home=env["FLYWHEEL_HOME"])
            seed = defs.resolve_job_def("seed_corpus_job").execute_in_process(instance=instance)
            assert seed.success
            log = root / "daemon.log"
            daemon = _daemon(env, log)
            try:
                yield Cluster(env, instance, daemon, log, root)
            finally:
                stop_pid(daemon.pid, signal.SIGTERM, timeout_s=30, group=True)


def _cycle_runs(instance: dg.DagsterInstance, partitions: set[str]) -> list[dg.RunRecord]:
    runs = instance.get_run_records(dg.RunsFilter(tags={"flywheel/run": "automation"}))
    return sorted(
        (r for r in runs if r.dagster_run.tags.get("dagster/partition") in partitions),
        key=lambda r: r.start_time,
    )


@pytest.mark.slow
def test_three_batches_turn_three_cycles_in_separate_run_processes(cluster):
    before = cluster.deployed()
    for i, name in enumerate(BATCHES):  # three teams' files land at once
        cluster.land(name, feedback_jsonl(f"team-{i}"))
    deployed = cluster.wait_for(
        lambda: len(cluster.deployed() - before) == 3 and cluster.deployed() - before,
        "three deployed cycles",
        CYCLE_TIMEOUT_S,
    )
    cycle_runs = cluster.finished(
        lambda: _cycle_runs(cluster.instance, deployed), "the three cycle runs to finish"
    )
    assert {r.dagster_run.tags["dagster/partition"] for r in cycle_runs} == deployed
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in cycle_runs)
    for earlier, later in zip(cycle_runs, cycle_runs[1:], strict=False):
        assert earlier.end_time <= later.start_time, "two cycles of one flywheel overlapped"

    store = cluster.store()
    order = store.query("SELECT cycle FROM cycles ORDER BY seq")["cycle"].to_list()
    order = [cycle for cycle in order if cycle in deployed]
    assert set(order) == deployed and len(order) == 3
    for cycle in order:  # every row conserved: received = accepted + quarantined = stored
        received, accepted, quarantined = store.batch_counts(cycle)
        assert received == accepted + quarantined == 4
    last = store.deployed_adapter()
    assert last["cycle"] == order[-1]
    assert {b["file"] for b in last["feedback_batches"]} >= set(BATCHES)
    written = [p for p in cluster.root.rglob("*") if p.suffix in (".duckdb", ".ducklake")]
    assert not written, f"a local lineage file was written: {written}"


def _run_worker_in(instance: dg.DagsterInstance, step: str, known: set[str]):
    """(run, pid of its run worker) of a new started run that has begun `step`, else None."""
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        if run.run_id in known:
            continue
        events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event]
        started = any(
            e.event_type == dg.DagsterEventType.STEP_START and e.step_key == step for e in events
        )
        pids = [
            int(e.engine_event_data.metadata["pid"].value)
            for e in events
            if e.event_type == dg.DagsterEventType.ENGINE_EVENT
            and e.message
            and e.message.startswith("Started process for run")
        ]
        if started and pids:
            return run, pids[0]
    return None


# Tables a cycle writes rows to, and the columns that name one row of a cycle.
ROW_KEYS = {
    "cycles": "cycle",
    "feedback": "cycle, source_file, line_no",
    "feedback_batches": "cycle, file_name",
    "exams": "cycle, question_no",
    "answers": "cycle, question_no",
    "evaluations": "cycle",
    "curricula": "cycle, example_id",
    "adapters": "cycle",
    "deployments": "cycle, action",
}


@pytest.mark.slow
def test_a_run_process_killed_mid_cycle_is_retried_and_the_lineage_stays_whole(cluster):
    instance = cluster.instance
    before = cluster.deployed()
    known = {run.run_id for run in instance.get_runs()}
    cluster.land(KILLED_BATCH, feedback_jsonl("team-killed"))
    # The cycle's run process (the run worker the code server started) while it trains.
    victim, pid = cluster.wait_for(
        lambda: _run_worker_in(instance, KILLED_STEP, known),
        f"a cycle run at {KILLED_STEP}",
        RETRY_TIMEOUT_S,
        poll_s=0.5,
    )
    assert alive(pid)
    os.kill(pid, signal.SIGKILL)
    cycle = victim.tags["dagster/partition"]

    deployed = cluster.wait_for(
        lambda: cycle in cluster.deployed() and cluster.deployed(),
        "the retried cycle",
        RETRY_TIMEOUT_S,
    )
    assert deployed - before == {cycle}
    killed = instance.get_run_by_id(victim.run_id)
    assert killed.status == dg.DagsterRunStatus.FAILURE
    assert killed.tags.get("dagster/will_retry") == "true"
    crash = [e.message for e in instance.all_logs(victim.run_id) if "SIGKILL" in (e.message or "")]
    assert crash, "the code server did not report the killed run worker"
    retries = [
        record.dagster_run
        for record in cluster.finished(
            lambda: instance.get_run_records(
                dg.RunsFilter(tags={"dagster/parent_run_id": victim.run_id})
            ),
            "the retry run to finish",
        )
    ]
    assert [r.status for r in retries] == [dg.DagsterRunStatus.SUCCESS]
    assert retries[0].tags["dagster/retry_number"] == "1"
    assert not alive(pid)

    store = cluster.store()
    received, accepted, quarantined = store.batch_counts(cycle)
    assert received == accepted + quarantined == 4  # every row conserved
    for table, key in ROW_KEYS.items():  # the killed attempt left no second copy of a row
        rows = store.query(
            f"SELECT count(*) AS n, count(DISTINCT ({key})) AS distinct_rows "
            f"FROM {table} WHERE cycle = ?",
            [cycle],
        ).row(0, named=True)
        assert rows["n"] == rows["distinct_rows"] >= 1, table
    history = store.deployment_history()
    deployed_then = history.filter(history["cycle"] == cycle)
    assert deployed_then["action"].to_list() == ["deploy"]  # once, by the retry
    assert deployed_then["deployed_by"].to_list() == [f"dagster run {retries[0].run_id}"]
    last = store.deployed_adapter()
    assert last["cycle"] == cycle
    assert KILLED_BATCH in {b["file"] for b in last["feedback_batches"]}
