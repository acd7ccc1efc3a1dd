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
    redactions: int = 0  # secrets replaced in the prompt before it was sent


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


def forget(store: LineageStore, keys: list[str]) -> None:
    """Drop cache entries (a reply that turned out unusable is asked for again next time)."""
    store.write(
        lambda con: con.execute(
            "DELETE FROM teacher_cache WHERE key IN (SELECT unnest(?::VARCHAR[]))", [keys]
        ),
        "teacher_cache",
    )


def _cache_filter(cycle: str | None, asset: str | None) -> tuple[str, list]:
    """Cache keys used by the cycle's / asset's calls (read from the ledger, which names them)."""
    clauses, params = [], []
    for column, value in (("cycle", cycle), ("asset", asset)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    where = " AND ".join(clauses) or "TRUE"
    return f"SELECT DISTINCT cache_key FROM teacher_ledger WHERE {where}", params


def cache_entries(
    store: LineageStore, cycle: str | None = None, asset: str | None = None
) -> pl.DataFrame:
    """Cached replies (one row each) with the cycles and assets whose calls used them."""
    used, params = _cache_filter(cycle, asset)
    scope = "TRUE" if cycle is None and asset is None else f"c.key IN ({used})"
    return store.query(
        f"""
        SELECT c.key, c.model, c.output_mode, c.prompt_tokens, c.completion_tokens,
               c.created_at, length(c.response) AS response_chars,
               (SELECT string_agg(DISTINCT l.cycle, ',' ORDER BY l.cycle) FROM teacher_ledger l
                WHERE l.cache_key = c.key) AS cycles,
               (SELECT string_agg(DISTINCT l.asset, ',' ORDER BY l.asset) FROM teacher_ledger l
                WHERE l.cache_key = c.key) AS assets
        FROM teacher_cache c WHERE {scope} ORDER BY c.created_at, c.key
        """,
        params,
    )


def clear_cache(store: LineageStore, cycle: str | None = None, asset: str | None = None) -> int:
    """Delete the cached replies used by the cycle / asset (all of them with neither); the next
    materialization sends those calls again. Returns how many entries were deleted."""
    keys = cache_entries(store, cycle, asset)["key"].to_list()
    if keys:
        forget(store, keys)
    return len(keys)


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
