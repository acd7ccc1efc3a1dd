"""Queries across cycles: the data pool, and what the previous cycle left behind."""

from __future__ import annotations

import json

import polars as pl

from flywheel_assets.teaching.stopping import TrainingHistory
from resources.artifact_store import ArtifactRef
from resources.lineage_store import LineageStore
from resources.teacher import Item

ITEM_COLUMNS = [
    "item_id",
    "source",
    "code",
    "review",
    "severity",
    "explanation",
    "explanation_source",
    "good_code",
    "details",
]


def to_items(frame: pl.DataFrame) -> list[Item]:
    return [Item.model_validate(row) for row in frame.select(ITEM_COLUMNS).iter_rows(named=True)]


def training_pool(store: LineageStore, cycle: str) -> pl.DataFrame:
    """The teacher's data source: the seed corpus's train split + feedback up to this cycle."""
    return store.query(
        """
        SELECT item_id, source, code, review, severity, NULL AS explanation,
               NULL AS explanation_source, good_code, details
        FROM seed_corpus WHERE split = 'train'
        UNION ALL
        SELECT f.item_id, 'feedback' AS source, f.code, f.review, f.severity, f.explanation,
               CASE WHEN f.explanation IS NULL THEN NULL ELSE 'reviewer' END,
               NULL AS good_code, NULL AS details
        FROM feedback f JOIN cycles c ON c.cycle = f.cycle
        WHERE c.seq <= (SELECT seq FROM cycles WHERE cycle = ?)
        ORDER BY item_id
        """,
        [cycle],
    )


def heldout_items(store: LineageStore, max_items: int | None) -> pl.DataFrame:
    """The fixed held-out split no training step ever sees (optionally a fixed prefix of it)."""
    frame = store.query(
        "SELECT item_id, source, code, review, severity, good_code, details FROM seed_corpus "
        "WHERE split = 'heldout' ORDER BY item_id"
    )
    return frame if max_items is None else frame.head(max_items)


def previous_evaluation(store: LineageStore, cycle: str) -> dict | None:
    prev = store.previous_cycle(cycle, "evaluations")
    if prev is None:
        return None
    row = store.query("SELECT * FROM evaluations WHERE cycle = ?", [prev]).row(0, named=True)
    row["per_class"] = json.loads(row["per_class"])
    return row


def previous_curriculum(store: LineageStore, cycle: str) -> tuple[str | None, pl.DataFrame]:
    prev = store.previous_cycle(cycle, "curricula")
    frame = store.query("SELECT * FROM curricula WHERE cycle = ? ORDER BY example_id", [prev or ""])
    return prev, frame


def previous_adapter(store: LineageStore, cycle: str) -> dict | None:
    prev = store.previous_cycle(cycle, "adapters")
    if prev is None:
        return None
    return store.query("SELECT * FROM adapters WHERE cycle = ?", [prev]).row(0, named=True)


def serving_adapter(store: LineageStore, cycle: str) -> dict | None:
    """The adapter deployed when this cycle started (None: the base model serves).

    The latest deployment event (a deploy, or a rollback re-pointing to an earlier cycle's
    version) recorded for an earlier cycle wins.
    """
    rows = store.query(
        """
        SELECT d.cycle AS deployed_in, d.model_version, a.adapter_sha256, a.uri
        FROM deployments d
        JOIN adapters a ON a.adapter_sha256 = d.adapter_sha256 AND a.cycle = d.cycle
        JOIN cycles c ON c.cycle = d.cycle
        WHERE c.seq < ? ORDER BY d.deployed_at DESC LIMIT 1
        """,
        [store.cycle_seq(cycle)],
    )
    return None if rows.is_empty() else rows.row(0, named=True)


def adapter_ref(row: dict) -> ArtifactRef:
    return ArtifactRef(uri=row["uri"], sha256=row["adapter_sha256"], size_bytes=0)


def training_history(store: LineageStore, cycle: str) -> TrainingHistory:
    """Steps, CUDA seconds and held-out accuracies of the fine-tunes before ``cycle``."""
    seq = store.cycle_seq(cycle)
    spent = store.query(
        """
        SELECT coalesce(sum(a.steps), 0) AS steps,
               coalesce(sum(a.train_seconds) FILTER (WHERE a.device = 'cuda'), 0) AS gpu_s
        FROM adapters a JOIN cycles c USING (cycle)
        WHERE c.seq < ? AND a.finetune_skipped_reason IS NULL
        """,
        [seq],
    ).row(0, named=True)
    results = store.query(
        """
        SELECT r.role, r.accuracy FROM heldout_results r
        JOIN cycles c USING (cycle) JOIN adapters a USING (cycle)
        WHERE c.seq < ? AND a.finetune_skipped_reason IS NULL ORDER BY c.seq
        """,
        [seq],
    )
    incoming = results.filter(pl.col("role") == "incoming")["accuracy"].head(1).to_list()
    candidates = results.filter(pl.col("role") == "candidate")["accuracy"].to_list()
    return TrainingHistory(
        accuracies=incoming + candidates,
        steps=int(spent["steps"]),
        gpu_seconds=float(spent["gpu_s"]),
    )
