"""Protects `flywheel serve start`: refusing a version stops the server it started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flywheel_cli import main as cli
from flywheel_core.hashing import sha256_dir
from resources.triton.repository import TritonModelRepository
from resources.triton.server import server_from_env
from tests.support.ports import free_ports


def tritonservers_serving(repository: Path) -> list[int]:
    """Pids of tritonserver processes serving `repository` (their command line names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"tritonserver")
            and str(repository).encode() in (b" ".join(cmdline))
        ):
            pids.append(int(entry.name))
    return pids


def tampered_version(repo: TritonModelRepository, tmp_path: Path) -> int:
    """Publish and pin a version, then flip its adapter: the sha256 check must refuse it."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    published = repo.publish(adapter, sha256_dir(adapter), tmp_path / "base", 192)
    repo.pin_version(published.version)
    stored = Path(published.path) / "adapter" / "adapter_model.safetensors"
    stored.write_bytes(b"\x01" + stored.read_bytes()[1:])
    return published.version


def test_serve_start_stops_its_server_when_the_pinned_version_is_refused(
    tmp_path, monkeypatch, capsys
):
    home = tmp_path / "home"
    for name, port in zip(("HTTP", "GRPC", "METRICS"), free_ports(3), strict=True):
        monkeypatch.setenv(f"FLYWHEEL_TRITON_{name}_PORT", str(port))
    server = server_from_env(os.environ, home.resolve())
    repo = TritonModelRepository(repository_dir=str(server.repository_dir))
    version = tampered_version(repo, tmp_path)
    try:
        code = cli.main(["serve", "start", "--home", str(home), "--timeout", "300"])
        err = capsys.readouterr().err
        assert code == 2
        assert f"v{version}" in err and "refusing to serve it" in err
        assert server.recorded_pid() is None
        assert tritonservers_serving(server.repository_dir) == []
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("FLYWHEEL_DEBUG", raising=False)  # user errors: one line, exit 2
