"""The teacher's cache and token ledger in the lineage store (content-addressed, append-only)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from resources.lineage.store import LineageStore


@dataclass(frozen=True)
class CachedReply:
    text: str
    output_mode: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class LedgerEntry:
    cycle: str
    asset: str
    call_key: str
    cache_key: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool
    retries: int
    outcome: str  # ok | cached | failed: <why> | skipped: <why>


def cache_key(model: str, prompt: str, params: dict) -> str:
    """sha256 over the model, the rendered (redacted) prompt and every sampling parameter."""
    blob = json.dumps({"model": model, "prompt": prompt, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cost_usd(prompt_tokens: int, completion_tokens: int, in_1m: float, out_1m: float) -> float:
    """USD for one call at per-1M-token prices."""
    return (prompt_tokens * in_1m + completion_tokens * out_1m) / 1_000_000


def lookup(store: LineageStore, keys: list[str]) -> dict[str, CachedReply]:
    """Cached replies for the keys that have one (one query for all)."""
    if not keys:
        return {}
    rows = store.query(
        "SELECT key, response, output_mode, prompt_tokens, completion_tokens FROM teacher_cache "
        "WHERE key IN (SELECT unnest(?::VARCHAR[]))",
        [keys],
    )
    return {
        r["key"]: CachedReply(
            r["response"], r["output_mode"], r["prompt_tokens"], r["completion_tokens"]
        )
        for r in rows.iter_rows(named=True)
    }


def remember(store: LineageStore, key: str, model: str, reply: CachedReply) -> None:
    row = {
        "key": key,
        "model": model,
        "response": reply.text,
        "output_mode": reply.output_mode,
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "created_at": datetime.now(UTC).replace(tzinfo=None),
    }
    store.replace_rows("teacher_cache", pl.DataFrame([row]), key=key)


def record(store: LineageStore, entry: LedgerEntry) -> None:
    row = {**entry.__dict__, "called_at": datetime.now(UTC).replace(tzinfo=None)}
    store.append_rows("teacher_ledger", pl.DataFrame([row]))


def cycle_spend(store: LineageStore, cycle: str) -> tuple[float, int]:
    """(USD, tokens) the cycle spent on calls that reached the endpoint (cache hits are free)."""
    row = store.query(
        "SELECT coalesce(sum(cost_usd), 0) AS usd, "
        "coalesce(sum(prompt_tokens + completion_tokens), 0) AS tokens "
        "FROM teacher_ledger WHERE cycle = ? AND NOT cached",
        [cycle],
    ).row(0, named=True)
    return float(row["usd"]), int(row["tokens"])
