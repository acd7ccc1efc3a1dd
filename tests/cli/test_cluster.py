"""Protects `flywheel cluster up|env|down`: real Postgres, S3 and Dagster processes on loopback,
each stopped by its process id, and the cluster instance config Dagster actually loads."""

from __future__ import annotations

import json
import socket

import dagster as dg
import psycopg2

from flywheel_cli import cluster
from flywheel_cli.local_servers import alive
from flywheel_cli.main import main


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cluster_up_runs_dagster_on_postgres_and_down_stops_every_process(
    tmp_path, capsys, monkeypatch
):
    home = tmp_path / "home"
    record = cluster.up(home, port=_free_port())
    pids = record["pids"]
    try:
        assert set(pids) == {"postgres", "weed", "daemon", "webserver"}
        assert all(alive(pid) for pid in pids.values())
        cluster.wait_for_webserver(record)
        env = record["env"]
        assert env["FLYWHEEL_LINEAGE"] == "ducklake" and env["FLYWHEEL_STORAGE"] == "s3"
        with psycopg2.connect(env["FLYWHEEL_LINEAGE_CATALOG"]):
            pass  # the DuckLake catalog database exists
        # The instance the daemon runs with: Postgres storage, the run queue, retries.
        monkeypatch.setenv("FLYWHEEL_DAGSTER_POSTGRES_URL", env["FLYWHEEL_DAGSTER_POSTGRES_URL"])
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            assert instance.run_retries_max_retries == 1
            assert instance.run_monitoring_enabled  # frees a killed run's pool slots
        assert main(["cluster", "env", "--home", str(home)]) == 0
        exported = capsys.readouterr().out
        assert f"export FLYWHEEL_LINEAGE_CATALOG='{env['FLYWHEEL_LINEAGE_CATALOG']}'" in exported
        assert json.loads(cluster.state_file(home).read_text())["pids"] == pids
    finally:
        stopped = cluster.down(home)
    assert len(stopped) == 4
    assert not any(alive(pid) for pid in pids.values())
    assert not cluster.state_file(home).exists()
