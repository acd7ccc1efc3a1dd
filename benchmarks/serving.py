"""Serving benchmark: reviews/s and p50/p95 latency of the student through Triton with dynamic
batching, through Triton one request at a time (dynamic batching off), and in-process, at 1, 4
and 16 concurrent clients; and the server's memory after 1 and after 5 deployments.

    PYTHONPATH=. python benchmarks/serving.py [--model smollm2-135m-instruct|tiny-llama]
        [--requests 64] [--threads 1] [--dtype auto|float32|bfloat16]
        [--max-batch-tokens 1024] [--out benchmarks/out/serving]

Every client sends one review per request (what a code-review bot does). Reviews are the real
OpenStack Nova review comments in ../shared/datasets/wsu_review_comments (synthetic ones when
that folder is absent). Adapters are randomly initialised LoRA adapters (r=16, all attention
and MLP projections): serving cost does not depend on what the adapter learned.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from flywheel_core.hashing import sha256_dir  # noqa: E402
from flywheel_core.ml.base_model import load_model_and_tokenizer, resolve_base_model  # noqa: E402
from flywheel_core.ml.hardware import cpu_has_native_bf16  # noqa: E402
from flywheel_core.ml.scoring import score_severity  # noqa: E402
from resources.triton.client import ReviewClient  # noqa: E402
from resources.triton.repository import TritonModelRepository  # noqa: E402
from resources.triton.rollout import control_client, go_live  # noqa: E402
from resources.triton.server import TritonServer  # noqa: E402

WSU = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "wsu_review_comments"
CONCURRENCY = (1, 4, 16)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def review_items(count: int) -> list[tuple[str, str]]:
    path = WSU / "review_comments.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines()[:count]]
        return [(r["code"], r["review"]) for r in rows]
    return [(f"def f{i}(x):\n    return x / {i % 3}\n", "division by zero?") for i in range(count)]


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model

    model, _ = load_model_and_tokenizer(base)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=16, lora_alpha=32, target_modules=LORA_TARGETS, init_lora_weights="gaussian"
    )
    get_peft_model(model, config).save_pretrained(out)
    return out


def server_rss_mib(pid: int) -> float:
    """RSS of the server and every process in its group (the Python-backend stubs)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pid:  # pgrp
                status = (stat.parent / "status").read_text()
                total += int(
                    next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1]
                )
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return total / 1024


def measure(call: Callable[[tuple[str, str]], object], items, clients: int) -> dict:
    """Each of `clients` threads sends its share of `items` one at a time."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one(item):
        start = time.perf_counter()
        call(item)
        with lock:
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, items))
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=20)
    return {"rps": len(items) / wall, "p50": statistics.median(latencies), "p95": q[18]}


def triton_caller(server: TritonServer, model_name: str) -> Callable:
    local = threading.local()

    def call(item):
        if not hasattr(local, "client"):
            local.client = ReviewClient(server.http_url, "http", model_name)
        return local.client.review(*item)

    return call


def in_process_caller(base: Path, adapter: Path, max_tokens: int, dtype: str) -> Callable:
    model, tokenizer = load_model_and_tokenizer(
        base, adapter_dir=adapter, dtype=getattr(torch, dtype)
    )

    def call(item):
        return score_severity(model, tokenizer, [item], batch_size=1, max_prompt_tokens=max_tokens)

    return call


def publish(repo: TritonModelRepository, adapter: Path, base: Path, args) -> int:
    extra = {"num_threads": args.threads, "dtype": args.dtype}
    return repo.publish(adapter, sha256_dir(adapter), base, args.max_prompt_tokens, extra).version


def run(args) -> dict:
    home = Path(args.out).resolve()
    home.mkdir(parents=True, exist_ok=True)
    base = resolve_base_model(args.model, Path(args.cache))
    adapters = [make_adapter(base, home / f"adapter-{k}", k) for k in range(5)]
    server = TritonServer(
        home=tempfile.mkdtemp(dir=home, prefix="home-"),
        http_port=args.port,
        grpc_port=args.port + 1,
        metrics_port=args.port + 2,
    )
    repos = {
        "triton dynamic batching": TritonModelRepository(
            repository_dir=str(server.repository_dir), max_batch_tokens=args.max_batch_tokens
        ),
        "triton one at a time": TritonModelRepository(
            repository_dir=str(server.repository_dir),
            model_name="flywheel_student_single",
            dynamic_batching=False,
        ),
    }
    items = review_items(args.requests)
    pid = server.start()
    results: dict = {
        "model": args.model,
        "requests": len(items),
        "threads": args.threads,
        "dtype": args.dtype,
        "max_batch_tokens": args.max_batch_tokens,
    }
    try:
        memory = []
        repo = repos["triton dynamic batching"]
        for adapter in adapters:
            go_live(repo, server, publish(repo, adapter, base, args))
            memory.append(server_rss_mib(pid))
        results["rss_mib_after_deployments"] = memory
        for mode, repo in repos.items():
            if mode != "triton dynamic batching":
                control_client(server).unload_model(repos["triton dynamic batching"].model_name)
                go_live(repo, server, publish(repo, adapters[0], base, args))
            call = triton_caller(server, repo.model_name)
            call(items[0])  # warm-up
            results[mode] = {c: measure(call, items, c) for c in CONCURRENCY}
    finally:
        server.stop()
    torch.set_num_threads(args.threads)
    call = in_process_caller(base, adapters[0], args.max_prompt_tokens, args.dtype)
    call(items[0])
    results["in-process"] = {c: measure(call, items, c) for c in CONCURRENCY}
    results["batching ceiling"] = batching_ceiling(base, adapters[0], items, args)
    return results


def batching_ceiling(base: Path, adapter: Path, items, args) -> dict:
    """What batching can buy on this machine at best: the same reviews scored in-process, all
    at once in batches of 16 (no server, no queueing) vs one by one. A server's dynamic batching
    ratio cannot beat this one: it runs the same forward passes plus its own overheads."""
    model, tokenizer = load_model_and_tokenizer(
        base, adapter_dir=adapter, dtype=getattr(torch, args.dtype)
    )
    kwargs = {"max_prompt_tokens": args.max_prompt_tokens}
    score_severity(model, tokenizer, items[:2], batch_size=1, **kwargs)  # warm-up
    timings = {}
    for name, batch, budget in (
        ("one by one", 1, None),
        ("batches of 16", 16, None),
        ("batches of 16, token budget", 16, args.max_batch_tokens),
    ):
        start = time.perf_counter()
        score_severity(model, tokenizer, items, batch_size=batch, max_batch_tokens=budget, **kwargs)
        timings[name] = len(items) / (time.perf_counter() - start)
    return timings


def table(results: dict) -> str:
    modes = ["triton dynamic batching", "triton one at a time", "in-process"]
    lines = [
        f"model {results['model']}, {results['requests']} reviews per cell, "
        f"{results['threads']} torch thread(s), {results['dtype']}, dynamic batches scored in "
        f"sub-batches of <= {results['max_batch_tokens']} padded tokens",
        "| mode | clients | reviews/s | p50 ms | p95 ms | vs one-at-a-time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode in modes:
        for c in CONCURRENCY:
            r = results[mode][c]
            ratio = r["rps"] / results["triton one at a time"][c]["rps"]
            lines.append(
                f"| {mode} | {c} | {r['rps']:.1f} | {1000 * r['p50']:.0f} | "
                f"{1000 * r['p95']:.0f} | {ratio:.2f}x |"
            )
    ceiling = results["batching ceiling"]
    single = ceiling["one by one"]
    lines += ["", "batching ceiling (in-process, all reviews at once, no server):"]
    lines += [
        f"  {name}: {rps:.2f} reviews/s ({rps / single:.2f}x)" for name, rps in ceiling.items()
    ]
    mem = results["rss_mib_after_deployments"]
    lines.append("")
    lines.append(
        "server RSS (tritonserver + stubs) after deployments 1..5 (MiB): "
        + ", ".join(f"{m:.0f}" for m in mem)
        + f"; after 5 vs after 1: {100 * (mem[-1] / mem[0] - 1):+.1f}%"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-prompt-tokens", type=int, default=256)
    parser.add_argument(
        "--dtype", default="auto", help="auto: bfloat16 where the CPU has native bf16, else float32"
    )
    parser.add_argument("--max-batch-tokens", type=int, default=1024)
    parser.add_argument("--port", type=int, default=18300)
    parser.add_argument("--out", default="benchmarks/out/serving")
    parser.add_argument(
        "--cache", default=os.environ.get("FLYWHEEL_CACHE", str(Path.home() / ".cache/flywheel"))
    )
    args = parser.parse_args()
    if args.dtype == "auto":
        args.dtype = "bfloat16" if cpu_has_native_bf16() else "float32"
    results = run(args)
    out = Path(args.out) / f"results-{args.model}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(table(results))  # noqa: T201 - the benchmark's report


if __name__ == "__main__":
    main()
