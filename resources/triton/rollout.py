"""Putting a published model version live on Triton, and taking it back.

`go_live` verifies the version's adapter sha256, pins the repository's config to it, asks the
server to (re)load the model through the model-control API (explicit mode), and sends a smoke
review. If any step fails, the previously pinned version is pinned and loaded again, so it keeps
serving, and the caller gets a `dg.Failure` that says what went wrong.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dagster as dg

from flywheel_core.severity import SEVERITIES
from resources.triton.client import ReviewClient, ReviewResult
from resources.triton.repository import TritonModelRepository
from resources.triton.server import TritonServer

SMOKE_ITEM = ("import os\n\ndef stop():\n    os._exit(1)\n", "This exits the process abruptly.")


@dataclass
class Rollout:
    version: int
    previous: int | None
    served: bool
    smoke: ReviewResult | None = None
    load_seconds: float = 0.0


def control_client(server: TritonServer):
    import tritonclient.http as httpclient

    timeout = server.startup_timeout_s
    return httpclient.InferenceServerClient(
        server.http_url, connection_timeout=timeout, network_timeout=timeout
    )


def smoke_test(server: TritonServer, model_name: str, version: int) -> ReviewResult:
    """The server reports exactly `version` loaded and answers a review with a valid severity."""
    with ReviewClient(server.http_url, "http", model_name) as client:
        served = client.served_versions()
        if served != [version]:
            raise RuntimeError(f"{model_name} serves versions {served}, expected [{version}]")
        result = client.review(*SMOKE_ITEM)
    if result.severity not in SEVERITIES:
        raise RuntimeError(f"smoke review returned {result.severity!r}")
    return result


def wait_settled(client, model_name: str, timeout_s: float) -> None:
    """Wait until no version of the model is still unloading (its stub process, with its copy of
    the base weights, has exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        index = client.get_model_repository_index()
        if not any(m["name"] == model_name and m.get("state") == "UNLOADING" for m in index):
            return
        time.sleep(0.25)


def load_version(repo: TritonModelRepository, server: TritonServer, version: int) -> float:
    """Pin `version`, have Triton load it and drop the version it replaces; seconds taken."""
    repo.pin_version(version)
    client = control_client(server)
    start = time.perf_counter()
    client.load_model(repo.model_name)
    wait_settled(client, repo.model_name, server.startup_timeout_s)
    return time.perf_counter() - start


def restore(repo: TritonModelRepository, server: TritonServer, previous: int | None) -> str:
    """Put `previous` back (or unload the model when there was none); what happened, in words."""
    client = control_client(server)
    try:
        if previous is None:
            client.unload_model(repo.model_name)
            return "no version served before; the model is unloaded"
        load_version(repo, server, previous)
        return f"v{previous} serves again"
    except Exception as exc:  # noqa: BLE001 - report both failures to the caller
        return f"restoring v{previous} failed too: {exc}"


def go_live(
    repo: TritonModelRepository,
    server: TritonServer,
    version: int,
    quarantine_on_failure: bool = True,
) -> Rollout:
    """Serve `version`; on failure the previous version keeps (or goes back to) serving."""
    previous = repo.pinned_version()
    repo.verify_version(version)
    if not server.is_running():
        if server.required:
            raise dg.Failure(f"no Triton server is running on {server.http_url} (required)")
        repo.pin_version(version)  # what the server will load when it starts
        return Rollout(version, previous, served=False)
    try:
        seconds = load_version(repo, server, version)
        smoke = smoke_test(server, repo.model_name, version)
    except Exception as exc:  # noqa: BLE001 - any failure: put the previous version back
        back = (
            restore(repo, server, previous)
            if previous != version
            else "it was already the pinned version"
        )
        where = ""
        if quarantine_on_failure and previous != version:
            where = f"; the version is moved to {repo.quarantine(version)}"
        raise dg.Failure(
            f"{repo.model_name} v{version} did not go live: {exc}; {back}{where}\n"
            f"server log tail:\n{server.log_tail(15)}"
        ) from exc
    return Rollout(version, previous, served=True, smoke=smoke, load_seconds=seconds)


def load_pinned(repo: TritonModelRepository, server: TritonServer) -> int | None:
    """After a server start: load the version the repository pins (None if nothing to load)."""
    version = repo.pinned_version()
    if version is None or version not in repo.versions():
        return None
    repo.verify_version(version)
    load_version(repo, server, version)
    return version
