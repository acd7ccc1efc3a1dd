"""Lineage audit reports: an adapter's whole chain, and the adapters a feedback batch
influenced, rendered as markdown from rows the lineage store returns."""

from __future__ import annotations

import json

import polars as pl

from flywheel_core.reporting.markdown import frame_table, table


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
        "serving now",
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
            "yes" if a.get("serving_now") else "no",
        )
        for a in chain
    ]
    return table(header, rows)


def _deployed(adapter: dict) -> str:
    if not adapter["model_version"]:
        return "no"
    now = "serving now" if adapter.get("serving_now") else "not serving now"
    return f"{adapter['model_name']} v{adapter['model_version']} ({now})"


def _prompts(raw: str | None) -> str:
    if not raw:
        return "-"
    return ", ".join(f"{name} {_short(sha, 16)}" for name, sha in json.loads(raw).items())


def _sources(counts: dict[str, int]) -> str:
    return ", ".join(f"{source}: {n}" for source, n in counts.items()) or "-"


def render_adapter(adapter: dict, chain: list[dict], explanation_sources: dict[str, int]) -> str:
    """Markdown: the adapter's facts, its warm-start chain (oldest first) and the feedback it
    learned from; `explanation_sources` counts who wrote its curriculum's references."""
    facts = [
        ("adapter sha256", adapter["adapter_sha256"]),
        ("artifact", adapter["uri"]),
        ("cycle", f"{adapter['cycle']} (#{adapter['seq']})"),
        ("deployed", _deployed(adapter)),
        ("base model", adapter["base_model"]),
        ("teacher", adapter["teacher"] or "-"),
        ("exam prompt sha256", _short(adapter["exam_prompt_sha256"], 16)),
        ("evaluation prompt sha256", _short(adapter["evaluation_prompt_sha256"], 16)),
        ("exam ids", ", ".join(adapter["exam_ids"] or [])),
        ("feedback rows up to this cycle", adapter["feedback_rows"] or 0),
        ("training", f"{adapter['steps']} steps, final loss {adapter['final_loss']:.4f}"),
        ("training prompts sha256", _prompts(adapter["training_prompts"])),
        ("reference explanations", _sources(explanation_sources)),
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
            _chain_table(chain),
            "## Feedback batches of every cycle up to it",
            _batch_table(adapter),
        ]
    )


def render_influence(batch: str, rows: pl.DataFrame) -> str:
    if rows.is_empty():
        return f"# Feedback batch {batch}\n\nNo adapter has been trained since it landed."
    head = rows.row(0, named=True)
    shown = rows.select(
        "adapter_cycle",
        pl.col("adapter_sha256").str.slice(0, 12),
        "feedback_rows_used",
        "deployed",
        "serving_now",
        "model_name",
        "model_version",
    )
    source = (
        f"{head['file_name']}, {head['accepted']} accepted rows"
        if head["file_name"]
        else "no feedback file: a cycle of seed examples only"
    )
    return "\n\n".join(
        [
            f"# Feedback batch {head['batch_cycle']} ({source})",
            "Adapters trained on a curriculum that holds its rows (read from the curricula):",
            frame_table(shown),
        ]
    )
