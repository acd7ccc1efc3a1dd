"""`flywheel serve start|stop|status`, `flywheel rollback <version|cycle>`, `flywheel review`."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from flywheel_assets.environments import cli_lineage_store
from flywheel_cli.errors import UserError
from resources.lineage.deployments import ROLLBACK, deployment_row
from resources.triton import production
from resources.triton.client import MODEL_NAME, ReviewClient
from resources.triton.repository import TritonModelRepository
from resources.triton.rollout import go_live, load_pinned
from resources.triton.server import TritonServer, server_from_env


def _home_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home", type=Path, default=Path(os.environ.get("FLYWHEEL_HOME", ".flywheel"))
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="start / stop / inspect the local Triton server")
    serve.add_argument("action", choices=["start", "stop", "status"])
    _home_arg(serve)
    for name in ("http", "grpc", "metrics"):
        serve.add_argument(f"--{name}-port", type=int, default=None)
    serve.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for ready")
    rollback = sub.add_parser("rollback", help="serve an earlier deployment again")
    rollback.add_argument("target", help="model version (e.g. 3) or cycle (e.g. bootstrap)")
    _home_arg(rollback)
    review = sub.add_parser("review", help="rate a review comment with the served student")
    review.add_argument("--code", required=True, help="file with the code/diff, or - for stdin")
    review.add_argument("--comment", required=True, help="the reviewer's comment")
    review.add_argument("--protocol", choices=["http", "grpc"], default="http")
    review.add_argument("--url", default=None, help="host:port (default: local server)")
    review.add_argument("--model", default=MODEL_NAME)
    review.add_argument("--json", action="store_true", help="print the result as JSON")
    review.add_argument(
        "--explain", action="store_true", help="also ask why the finding has that severity"
    )
    export = sub.add_parser("export-serving", help="production config: Triton vLLM or NIM")
    export.add_argument("target", choices=["vllm", "nim"])
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--base-model", default="meta-llama/Meta-Llama-3-8B-Instruct")
    _home_arg(export)


def server_for(args: argparse.Namespace) -> TritonServer:
    server = server_from_env(os.environ, args.home.resolve())
    ports = {f"{n}_port": getattr(args, f"{n}_port", None) for n in ("http", "grpc", "metrics")}
    timeout = getattr(args, "timeout", None)
    updates = {k: v for k, v in ports.items() if v is not None}
    if timeout is not None:
        updates["startup_timeout_s"] = timeout
    return server.model_copy(update=updates) if updates else server


def repository_for(server: TritonServer) -> TritonModelRepository:
    return TritonModelRepository(repository_dir=str(server.repository_dir))


def _out(text: str) -> None:
    print(text)  # noqa: T201 - the command's output


def _served_versions(server: TritonServer, model_name: str) -> list[int]:
    try:
        with ReviewClient(server.http_url, "http", model_name) as client:
            return client.served_versions()
    except Exception:  # noqa: BLE001 - the model is not loaded (yet)
        return []


def run_serve(args: argparse.Namespace) -> int:
    server = server_for(args)
    repo = repository_for(server)
    if args.action == "start":
        pid = server.start()
        try:
            version = load_pinned(repo, server)
        except Exception:
            server.stop()  # refused the version: do not leave the server we started running
            raise
        loaded = f"{repo.model_name} v{version}" if version else "no model version yet"
        _out(f"tritonserver pid {pid} ready on http {server.http_url}, grpc {server.grpc_url}")
        _out(f"serving {loaded} from {server.repository_dir}")
        return 0
    if args.action == "stop":
        _out("stopped" if server.stop() else "no server was running")
        return 0
    status = {**server.status(), "pinned_version": repo.pinned_version()}
    if status["live"]:
        status["served_versions"] = _served_versions(server, repo.model_name)
    _out(json.dumps(status, indent=2))
    return 0 if status["live"] else 1


def run_rollback(args: argparse.Namespace) -> int:
    server = server_for(args)
    repo = repository_for(server)
    store = cli_lineage_store(args.home.resolve())
    if not store.exists():  # never create an empty store at a mistyped --home
        raise UserError(f"no lineage store at {store.describe()} (check --home / FLYWHEEL_HOME)")
    target = store.find_deployment(args.target)
    version = int(target["model_version"])
    rollout = go_live(repo, server, version, quarantine_on_failure=False)
    row = deployment_row(
        target["cycle"],
        target["adapter_sha256"],
        repo.model_name,
        repo.repository_dir,
        version,
        rollout.served,
        ROLLBACK,
        "cli",
        f"flywheel rollback ({getpass.getuser()})",
    )
    store.record_rollback(row)
    state = "serving" if rollout.served else "pinned (the server loads it when started)"
    _out(f"{repo.model_name} v{version} (cycle {target['cycle']}) {state}")
    return 0


def _read_code(source: str) -> str:
    if source != "-" and not Path(source).is_file():
        raise UserError(f"--code {source}: no such file")
    return sys.stdin.read() if source == "-" else Path(source).read_text()


def run_review(args: argparse.Namespace) -> int:
    local = server_from_env(os.environ, Path("."))
    url = args.url or (local.http_url if args.protocol == "http" else local.grpc_url)
    with ReviewClient(url, args.protocol, args.model) as client:
        result = client.review(_read_code(args.code), args.comment, explain=args.explain)
    if args.json:
        _out(json.dumps(result.__dict__, indent=2))
        return 0
    _out(f"severity: {result.severity}")
    for label, p in result.probabilities.items():
        _out(f"  {label:<9} {p:.3f}")
    if result.explanation:
        _out(f"explanation: {result.explanation}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    store = cli_lineage_store(args.home.resolve())
    rows = store.deployed_adapter_uris()
    adapters = production.deployed_adapters(rows)
    if args.target == "vllm":
        path = production.write_vllm_repository(args.out, args.base_model, adapters)
        _out(f"Triton vLLM model with {len(adapters)} LoRA adapters: {path}")
    else:
        env = production.write_nim_peft_source(args.out, adapters)
        _out("\n".join(f"{k}={v}" for k, v in env.items()))
    return 0


COMMANDS = {
    "serve": run_serve,
    "rollback": run_rollback,
    "review": run_review,
    "export-serving": run_export,
}
