"""Lineage audit: an adapter's whole chain, and the adapters a feedback batch influenced."""

from __future__ import annotations

import json
import re

import polars as pl

from flywheel_assets.markdown import frame_table, table
from resources.lineage_store import LineageStore

_VERSION = re.compile(r"^v?(\d+)$")
_SHA = re.compile(r"^[0-9a-f]{6,64}$")


class AuditError(LookupError):
    """The reference names no adapter / batch, or more than one."""


def _one(frame: pl.DataFrame, what: str) -> dict:
    if frame.is_empty():
        raise AuditError(f"no adapter matches {what}")
    if frame["adapter_sha256"].n_unique() > 1:
        found = ", ".join(f"{r['adapter_sha256'][:12]} ({r['cycle']})" for r in frame.to_dicts())
        raise AuditError(f"{what} is ambiguous: {found}")
    return frame.row(0, named=True)


def find_adapter(store: LineageStore, ref: str) -> dict:
    """An adapter_lineage row by cycle, deployment version (`3` / `v3`) or sha256 prefix."""
    by_cycle = store.query("SELECT * FROM adapter_lineage WHERE cycle = ?", [ref])
    if not by_cycle.is_empty():
        return _one(by_cycle, f"cycle {ref!r}")
    if match := _VERSION.match(ref):
        rows = store.query(
            "SELECT * FROM adapter_lineage WHERE model_version = ?", [int(match.group(1))]
        )
        if not rows.is_empty():
            return _one(rows, f"deployment version {ref!r}")
    if _SHA.match(ref.lower()):
        rows = store.query(
            "SELECT * FROM adapter_lineage WHERE starts_with(adapter_sha256, ?)", [ref.lower()]
        )
        return _one(rows, f"adapter sha256 prefix {ref!r}")
    raise AuditError(f"no adapter matches {ref!r} (a cycle, a deployment version or a sha prefix)")


def deployed_adapter(store: LineageStore) -> dict | None:
    """The adapter of the latest deployment (None before the first one)."""
    rows = store.query(
        "SELECT * FROM adapter_lineage WHERE model_version IS NOT NULL "
        "ORDER BY model_version DESC LIMIT 1"
    )
    return None if rows.is_empty() else rows.row(0, named=True)


def warm_start_chain(store: LineageStore, adapter: dict) -> list[dict]:
    """The adapter and every adapter it was warm-started from, oldest first."""
    chain = [adapter]
    while chain[-1]["init_adapter_sha256"]:
        rows = store.query(
            "SELECT * FROM adapter_lineage WHERE adapter_sha256 = ? ORDER BY seq LIMIT 1",
            [chain[-1]["init_adapter_sha256"]],
        )
        if rows.is_empty() or len(chain) > 10_000:
            break
        chain.append(rows.row(0, named=True))
    return chain[::-1]


def _short(value: object, n: int = 12) -> str:
    return "-" if value is None else str(value)[:n]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _batch_table(adapter: dict) -> str:
    rows = [
        (
            b["cycle"],
            b["file"] or "(none)",
            _short(b["sha256"]),
            b["received"] or 0,
            b["accepted"],
            b["quarantined"],
        )
        for b in adapter["feedback_batches"] or []
    ]
    header = ("cycle", "file", "sha256", "received", "accepted", "quarantined")
    return table(header, rows)


def _chain_table(chain: list[dict]) -> str:
    header = (
        "cycle",
        "adapter",
        "warm start",
        "exam",
        "exam acc",
        "proficiency",
        "curriculum",
        "held-out acc",
        "deployed",
    )
    rows = [
        (
            a["cycle"],
            _short(a["adapter_sha256"]),
            _short(a["init_adapter_sha256"]),
            a["exam_id"] or "-",
            _pct(a["exam_accuracy"]),
            a["proficiency"] or "-",
            f"{a['curriculum_cycle']} v{a['curriculum_version']} ({a['curriculum_size']})",
            _pct(a["heldout_accuracy"]),
            f"{a['model_name']} v{a['model_version']}" if a["model_version"] else "no",
        )
        for a in chain
    ]
    return table(header, rows)


def _prompts(raw: str | None) -> str:
    if not raw:
        return "-"
    return ", ".join(f"{name} {_short(sha, 16)}" for name, sha in json.loads(raw).items())


def _explanation_sources(store: LineageStore, curriculum_cycle: str | None) -> str:
    """Who wrote the curriculum's reference explanations (rows without one: severity only)."""
    counts = store.query(
        "SELECT coalesce(explanation_source, 'none (severity only)') AS source, count(*) AS n "
        "FROM curricula WHERE cycle = ? GROUP BY 1 ORDER BY 1",
        [curriculum_cycle or ""],
    )
    return ", ".join(f"{r['source']}: {r['n']}" for r in counts.iter_rows(named=True)) or "-"


def render_adapter(store: LineageStore, adapter: dict) -> str:
    """Markdown: the adapter's facts, its warm-start chain and the feedback it learned from."""
    facts = [
        ("adapter sha256", adapter["adapter_sha256"]),
        ("artifact", adapter["uri"]),
        ("cycle", f"{adapter['cycle']} (#{adapter['seq']})"),
        ("base model", adapter["base_model"]),
        ("teacher", adapter["teacher"] or "-"),
        ("exam prompt sha256", _short(adapter["exam_prompt_sha256"], 16)),
        ("evaluation prompt sha256", _short(adapter["evaluation_prompt_sha256"], 16)),
        ("exam ids", ", ".join(adapter["exam_ids"] or [])),
        ("feedback rows up to this cycle", adapter["feedback_rows"] or 0),
        ("training", f"{adapter['steps']} steps, final loss {adapter['final_loss']:.4f}"),
        ("training prompts sha256", _prompts(adapter["training_prompts"])),
        ("reference explanations", _explanation_sources(store, adapter["curriculum_cycle"])),
        ("training config", adapter["config"]),
        (
            "held-out",
            f"accuracy {_pct(adapter['heldout_accuracy'])}, "
            f"macro-F1 {adapter['heldout_macro_f1'] or 0:.3f}",
        ),
    ]
    return "\n\n".join(
        [
            f"# Lineage of adapter {adapter['adapter_sha256'][:12]}",
            table(("field", "value"), facts),
            "## Warm-start chain (oldest first)",
            _chain_table(warm_start_chain(store, adapter)),
            "## Feedback batches of every cycle up to it",
            _batch_table(adapter),
        ]
    )


def feedback_influence(store: LineageStore, batch: str) -> pl.DataFrame:
    """The adapters (and deployments) a batch influenced: by cycle key, file name or sha."""
    rows = store.query(
        """
        SELECT * FROM feedback_influence
        WHERE batch_cycle = ? OR file_name = ? OR starts_with(batch_sha256, lower(?))
        ORDER BY adapter_seq
        """,
        [batch, batch, batch if len(batch) >= 6 else "\0"],
    )
    if rows.is_empty():
        known = store.query(
            "SELECT count(*) AS n FROM feedback_batch_summary WHERE cycle = ? OR file_name = ?",
            [batch, batch],
        )["n"][0]
        if not known:
            raise AuditError(f"no feedback batch matches {batch!r}")
    return rows


def render_influence(batch: str, rows: pl.DataFrame) -> str:
    if rows.is_empty():
        return f"# Feedback batch {batch}\n\nNo adapter has been trained since it landed."
    head = rows.row(0, named=True)
    shown = rows.select(
        "adapter_cycle",
        pl.col("adapter_sha256").str.slice(0, 12),
        "deployed",
        "model_name",
        "model_version",
    )
    return "\n\n".join(
        [
            f"# Feedback batch {head['batch_cycle']} ({head['file_name']}, "
            f"{head['accepted']} accepted rows)",
            "Adapters trained on a curriculum that includes it (curricula accumulate):",
            frame_table(shown),
        ]
    )
