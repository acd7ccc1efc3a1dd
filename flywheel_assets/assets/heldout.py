"""heldout_evaluation: the new adapter and the serving model on the fixed held-out split."""

import json

import dagster as dg
import polars as pl

from flywheel_assets import lineage
from flywheel_assets.assets.adapter import lora_adapter
from flywheel_assets.assets.answers import progress_logger
from flywheel_assets.markdown import table
from flywheel_assets.partitions import cycle_asset
from flywheel_assets.plots import accuracy_over_cycles
from flywheel_assets.severity import SEVERITIES
from flywheel_assets.teaching.metrics import classification_report
from resources.artifact_store import ArtifactStore
from resources.flywheel_config import FlywheelConfig
from resources.lineage_store import LineageStore
from resources.student import StudentModel

VERSION = "1"


def score_heldout(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: StudentModel,
    artifacts: ArtifactStore,
    items: pl.DataFrame,
    adapter: dict | None,
) -> tuple[str, dict, float]:
    """Held-out report of one model; cached by model (base id or adapter sha256) and item."""
    model_ref = (
        f"adapter:{adapter['adapter_sha256']}" if adapter else f"base:{student.base_model_id()}"
    )
    cached = store.query(
        "SELECT item_id, severity, predicted FROM heldout_scores WHERE model_ref = ?", [model_ref]
    )
    seconds = 0.0
    if not set(items["item_id"]) <= set(cached["item_id"]):
        adapter_dir = artifacts.local_dir(lineage.adapter_ref(adapter)) if adapter else None
        results, seconds = student.rate(
            list(zip(items["code"], items["review"], strict=True)),
            adapter_dir=adapter_dir,
            on_progress=progress_logger(context, f"held-out [{model_ref[:20]}]"),
        )
        cached = items.select("item_id", "severity").with_columns(
            predicted=pl.Series([r["severity"] for r in results]), model_ref=pl.lit(model_ref)
        )
        store.replace_rows("heldout_scores", cached, model_ref=model_ref)
    scored = items.select("item_id").join(cached, on="item_id", how="left")
    report = classification_report(scored["severity"].to_list(), scored["predicted"].to_list())
    return model_ref, report, seconds


def history_plot(store: LineageStore, cycle: str, baseline: float) -> str:
    rows = store.query(
        """
        SELECT r.cycle, r.role, r.accuracy, r.macro_f1 FROM heldout_results r
        JOIN cycles c ON c.cycle = r.cycle
        WHERE c.seq <= (SELECT seq FROM cycles WHERE cycle = ?) ORDER BY c.seq
        """,
        [cycle],
    )
    first = rows.filter(pl.col("role") == "incoming").head(1)
    cands = rows.filter(pl.col("role") == "candidate")
    labels = ["start", *cands["cycle"].to_list()]
    accuracy = [*first["accuracy"].to_list(), *cands["accuracy"].to_list()]
    macro = [*first["macro_f1"].to_list(), *cands["macro_f1"].to_list()]
    return accuracy_over_cycles(labels[: len(accuracy)], accuracy, macro, baseline)


@cycle_asset(VERSION, deps=[lora_adapter])
def heldout_evaluation(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: StudentModel,
    artifacts: ArtifactStore,
    flywheel_config: FlywheelConfig,
) -> dg.MaterializeResult:
    """Accuracy and macro-F1 of the candidate adapter vs. the model serving before this cycle."""
    cycle = context.partition_key
    items = lineage.heldout_items(store, flywheel_config.settings().heldout.max_items)
    candidate = store.query("SELECT * FROM adapters WHERE cycle = ?", [cycle])
    if candidate.is_empty():
        raise dg.Failure(f"cycle {cycle} has no adapter: materialize lora_adapter first")
    serving = lineage.serving_adapter(store, cycle)
    reports, seconds = {}, 0.0
    for role, adapter in (("incoming", serving), ("candidate", candidate.row(0, named=True))):
        model_ref, report, took = score_heldout(context, store, student, artifacts, items, adapter)
        reports[role] = (model_ref, report)
        seconds += took
    store.replace_rows(
        "heldout_results",
        pl.DataFrame(
            [
                {
                    "cycle": cycle,
                    "role": role,
                    "model_ref": ref,
                    "items": report["n"],
                    "accuracy": report["accuracy"],
                    "macro_f1": report["macro_f1"],
                    "per_class": json.dumps(report["per_class"]),
                    "asset_version": VERSION,
                }
                for role, (ref, report) in reports.items()
            ]
        ),
        cycle=cycle,
    )
    counts = items["severity"].value_counts()
    majority = float(counts["count"].max() / items.height)
    incoming, cand = reports["incoming"][1], reports["candidate"][1]
    recall_rows = [
        (c, incoming["per_class"][c]["recall"], cand["per_class"][c]["recall"]) for c in SEVERITIES
    ]
    context.log.info(
        f"held-out accuracy {incoming['accuracy']:.1%} -> {cand['accuracy']:.1%} "
        f"({items.height} items)"
    )
    return dg.MaterializeResult(
        metadata={
            "heldout_items": items.height,
            "candidate_accuracy": cand["accuracy"],
            "candidate_macro_f1": cand["macro_f1"],
            "incoming_accuracy": incoming["accuracy"],
            "incoming_macro_f1": incoming["macro_f1"],
            "incoming_model": reports["incoming"][0],
            "majority_class_accuracy": majority,
            "accuracy_gain_points": round(100 * (cand["accuracy"] - incoming["accuracy"]), 2),
            "inference_seconds": round(seconds, 2),
            "recall_per_severity": dg.MetadataValue.md(
                table(["severity", "incoming recall", "candidate recall"], recall_rows)
            ),
            "accuracy_over_cycles": dg.MetadataValue.md(history_plot(store, cycle, majority)),
            "finetune_skipped_reason": candidate["finetune_skipped_reason"][0] or "none",
        }
    )
