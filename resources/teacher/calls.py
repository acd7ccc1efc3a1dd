"""Run a batch of teacher calls: cache first, then the endpoint under a budget, all in the ledger.

A reply is not cached here: the teacher parses and validates it first and then `settle`s the
batch, which caches only the replies that were fully usable and drops cached ones that were not,
so a call whose reply failed or was partly quarantined is sent again next time.

Only the calling thread touches DuckDB; worker threads do nothing but HTTP. At most
`max_concurrency` calls are in flight, and a new one starts only while the cycle's spend
(ledger + this batch) is under budget, so a budget can be overshot by at most the calls already
in flight when it was reached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from flywheel_core.domain import TeacherUsage
from resources.lineage.store import LineageStore
from resources.teacher.client import CallFailed, Completion
from resources.teacher.ledger import (
    CachedReply,
    LedgerEntry,
    cache_key,
    cost_usd,
    cycle_spend,
    forget,
    lookup,
    record,
    remember,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedCall:
    call_key: str  # e.g. "exam/major/0": stable name of the call within the asset
    prompt: str
    schema: dict | None
    redactions: int = 0  # secrets replaced in the prompt (recorded in the ledger)


@dataclass(frozen=True)
class CallOutcome:
    call_key: str
    text: str | None  # None: failed or skipped
    output_mode: str | None = None
    error: str | None = None
    skipped: bool = False  # not sent: the cycle's budget was spent
    cache_key: str | None = None
    fresh: CachedReply | None = None  # a reply from the endpoint, cached only once it validated
    cached: bool = False  # the reply came from the cache


@dataclass(frozen=True)
class Budget:
    usd: float | None
    tokens: int | None
    input_per_1m: float
    output_per_1m: float

    def exceeded(self, usd: float, tokens: int) -> str | None:
        if self.usd is not None and usd >= self.usd:
            return f"cycle budget of ${self.usd:.4f} reached (spent ${usd:.4f})"
        if self.tokens is not None and tokens >= self.tokens:
            return f"cycle budget of {self.tokens} tokens reached (spent {tokens})"
        return None


@dataclass
class Batch:
    store: LineageStore
    cycle: str
    asset: str
    model: str
    params: dict
    budget: Budget
    max_concurrency: int
    send: Callable[[PreparedCall], Completion]


def run_calls(batch: Batch, calls: list[PreparedCall], usage: TeacherUsage) -> list[CallOutcome]:
    """One outcome per call, in order; `usage` is updated with hits, tokens, cost and retries."""
    keys = [cache_key(batch.model, c.prompt, {**batch.params, "schema": c.schema}) for c in calls]
    hits = lookup(batch.store, keys)
    outcomes: dict[int, CallOutcome] = {}
    misses = []
    for i, (call, key) in enumerate(zip(calls, keys, strict=True)):
        if key in hits:
            outcomes[i] = _hit(batch, call, key, hits[key], usage)
        else:
            misses.append(i)
    usage.cache_misses += len(misses)
    if misses:
        outcomes.update(_send_all(batch, calls, keys, misses, usage))
    usage.calls += len(calls)
    usage.cycle_cost_usd, usage.cycle_tokens = cycle_spend(batch.store, batch.cycle)
    return [outcomes[i] for i in range(len(calls))]


def _hit(batch: Batch, call: PreparedCall, key: str, reply: CachedReply, usage: TeacherUsage):
    usage.cache_hits += 1
    usage.output_modes[reply.output_mode] = usage.output_modes.get(reply.output_mode, 0) + 1
    _ledger(batch, call, key, 0, 0, 0.0, cached=True, retries=0, outcome="cached")
    return CallOutcome(call.call_key, reply.text, reply.output_mode, cache_key=key, cached=True)


def _send_all(
    batch: Batch, calls: list[PreparedCall], keys: list[str], todo: list[int], usage: TeacherUsage
) -> dict[int, CallOutcome]:
    spent_usd, spent_tokens = cycle_spend(batch.store, batch.cycle)
    outcomes: dict[int, CallOutcome] = {}
    pending: dict[Future, int] = {}
    queue = list(todo)
    with ThreadPoolExecutor(max_workers=batch.max_concurrency) as pool:
        while queue or pending:
            stop = batch.budget.exceeded(spent_usd, spent_tokens)
            while queue and not stop and len(pending) < batch.max_concurrency:
                i = queue.pop(0)
                pending[pool.submit(batch.send, calls[i])] = i
            if stop and queue:
                usage.budget_stop = f"{stop}: {len(queue)} call(s) not sent"
                for i in queue:
                    outcomes[i] = _skip(batch, calls[i], keys[i], stop, usage)
                queue = []
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                i = pending.pop(future)
                outcomes[i] = _finish(batch, calls[i], keys[i], future, usage)
            spent_usd, spent_tokens = cycle_spend(batch.store, batch.cycle)
    return outcomes


def _finish(
    batch: Batch, call: PreparedCall, key: str, future: Future, usage: TeacherUsage
) -> CallOutcome:
    try:
        done: Completion = future.result()
    except CallFailed as exc:
        usage.failed_calls += 1
        usage.retries += exc.retries
        log.warning("teacher call %s failed: %s", call.call_key, exc)
        _ledger(batch, call, key, 0, 0, 0.0, False, exc.retries, f"failed: {exc}")
        return CallOutcome(call.call_key, None, error=str(exc), cache_key=key)
    cost = cost_usd(
        done.prompt_tokens,
        done.completion_tokens,
        batch.budget.input_per_1m,
        batch.budget.output_per_1m,
    )
    usage.retries += done.retries
    usage.prompt_tokens += done.prompt_tokens
    usage.completion_tokens += done.completion_tokens
    usage.cost_usd += cost
    usage.output_modes[done.output_mode] = usage.output_modes.get(done.output_mode, 0) + 1
    reply = CachedReply(done.text, done.output_mode, done.prompt_tokens, done.completion_tokens)
    _ledger(
        batch,
        call,
        key,
        done.prompt_tokens,
        done.completion_tokens,
        cost,
        False,
        done.retries,
        "ok" if done.finish_reason != "length" else "ok: truncated (length)",
    )
    # A reply cut at max_tokens is never cached, whatever the parser makes of it.
    fresh = reply if done.finish_reason != "length" else None
    return CallOutcome(call.call_key, done.text, done.output_mode, cache_key=key, fresh=fresh)


def _skip(batch: Batch, call: PreparedCall, key: str, why: str, usage: TeacherUsage):
    usage.skipped_calls += 1
    _ledger(batch, call, key, 0, 0, 0.0, False, 0, f"skipped: {why}")
    return CallOutcome(call.call_key, None, error=f"skipped: {why}", skipped=True, cache_key=key)


def settle(
    store: LineageStore, model: str, outcomes: list[CallOutcome], usable: list[bool]
) -> None:
    """Cache the fresh replies that were fully usable; drop cached replies that were not (a
    cache entry written before validation existed, or one the current rules now reject)."""
    stale = []
    for outcome, ok in zip(outcomes, usable, strict=True):
        if ok and outcome.fresh is not None and outcome.cache_key:
            remember(store, outcome.cache_key, model, outcome.fresh)
        elif not ok and outcome.cached and outcome.cache_key:
            stale.append(outcome.cache_key)
    if stale:
        forget(store, stale)


def _ledger(
    batch: Batch,
    call: PreparedCall,
    key: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost: float,
    cached: bool,
    retries: int,
    outcome: str,
) -> None:
    entry = LedgerEntry(
        batch.cycle,
        batch.asset,
        call.call_key,
        key,
        batch.model,
        prompt_tokens,
        completion_tokens,
        cost,
        cached,
        retries,
        outcome,
        call.redactions,
    )
    record(batch.store, entry)
