"""heldout_evaluation: the new adapter and the serving model on the fixed held-out split.

Roles: `incoming` is the model serving when the cycle started (its lineage), `candidate` the
cycle's adapter, and `serving` the model serving now when that differs from `incoming` (a
backfilled old cycle): the deployment gate compares the candidate with the model serving now.
"""

import json

import dagster as dg
import polars as pl

from flywheel_assets.assets.step06_lora_adapter import lora_adapter
from flywheel_assets.metadata import number, percent, progress_logger, table_value
from flywheel_assets.partitions import cycle_asset
from flywheel_core.ml.student import Student
from flywheel_core.reporting.plots import accuracy_over_cycles
from flywheel_core.severity import SEVERITIES
from flywheel_core.teaching.metrics import classification_report
from resources.artifacts.base import ArtifactStore
from resources.config import FlywheelConfig
from resources.lineage.store import LineageStore
from resources.student import StudentModel

VERSION = "1"


def model_ref(student: Student, adapter: dict | None) -> str:
    """How the lineage names a model: its adapter's sha256, or the base model's id."""
    return f"adapter:{adapter['adapter_sha256']}" if adapter else f"base:{student.base_model_id()}"


def score_heldout(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: Student,
    artifacts: ArtifactStore,
    items: pl.DataFrame,
    adapter: dict | None,
) -> tuple[str, dict, float]:
    """Held-out report of one model; cached by model (base id or adapter sha256) and item."""
    ref = model_ref(student, adapter)
    cached = store.heldout_predictions(ref)
    seconds = 0.0
    if not set(items["item_id"]) <= set(cached["item_id"]):
        adapter_dir = artifacts.adapter_dir(adapter) if adapter else None
        results, seconds = student.rate(
            list(zip(items["code"], items["review"], strict=True)),
            adapter_dir=adapter_dir,
            on_progress=progress_logger(context, f"held-out [{ref[:20]}]"),
        )
        cached = items.select("item_id", "severity").with_columns(
            predicted=pl.Series([r["severity"] for r in results]), model_ref=pl.lit(ref)
        )
        store.replace_rows("heldout_scores", cached, model_ref=ref)
    scored = items.select("item_id").join(cached, on="item_id", how="left")
    report = classification_report(scored["severity"].to_list(), scored["predicted"].to_list())
    return ref, report, seconds


def history_plot(store: LineageStore, cycle: str, baseline: float) -> str:
    rows = store.heldout_history(cycle)
    first = rows.filter(pl.col("role") == "incoming").head(1)
    cands = rows.filter(pl.col("role") == "candidate")
    labels = ["start", *cands["cycle"].to_list()]
    accuracy = [*first["accuracy"].to_list(), *cands["accuracy"].to_list()]
    macro = [*first["macro_f1"].to_list(), *cands["macro_f1"].to_list()]
    return accuracy_over_cycles(labels[: len(accuracy)], accuracy, macro, baseline)


def result_rows(cycle: str, reports: dict[str, tuple[str, dict]]) -> pl.DataFrame:
    return pl.DataFrame(
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
    )


@cycle_asset(VERSION, deps=[lora_adapter])
def heldout_evaluation(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: StudentModel,
    artifacts: ArtifactStore,
    flywheel_config: FlywheelConfig,
) -> dg.MaterializeResult:
    """Accuracy and macro-F1 of the candidate adapter vs. the model serving before this cycle
    (and the model serving now, when newer); the deployment gate checks it."""
    cycle = context.partition_key
    settings = flywheel_config.settings()
    runner = student.runner(settings.student)
    items = store.heldout_items(settings.heldout.max_items)
    candidate = store.adapter(cycle)
    if candidate is None:
        raise dg.Failure(f"cycle {cycle} has no adapter: materialize lora_adapter first")
    serving = store.serving_adapter(cycle)
    now = store.serving_now()
    roles = [("incoming", serving), ("candidate", candidate)]
    if now is not None and now["uri"] and model_ref(runner, now) != model_ref(runner, serving):
        roles.append(("serving", now))  # a newer deployment than this cycle's incoming model
    reports, seconds = {}, 0.0
    for role, adapter in roles:
        ref, report, took = score_heldout(context, store, runner, artifacts, items, adapter)
        reports[role] = (ref, report)
        seconds += took
    store.replace_rows("heldout_results", result_rows(cycle, reports), cycle=cycle)
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
    metadata = {
        "heldout_items": dg.MetadataValue.int(items.height),
        "candidate accuracy (%)": percent(cand["accuracy"]),
        "candidate macro-F1": number(cand["macro_f1"]),
        "incoming accuracy (%)": percent(incoming["accuracy"]),
        "incoming macro-F1": number(incoming["macro_f1"]),
        "incoming_model": reports["incoming"][0],
        "majority-class accuracy (%)": percent(majority),
        "accuracy gain (points)": number(100 * (cand["accuracy"] - incoming["accuracy"]), 2),
        "inference_seconds": number(seconds, 2),
        "recall_per_severity": table_value(
            ["severity", "incoming recall", "candidate recall"], recall_rows
        ),
        "accuracy_over_cycles": dg.MetadataValue.md(history_plot(store, cycle, majority)),
        "finetune_skipped_reason": candidate["finetune_skipped_reason"] or "none",
    }
    if "serving" in reports:  # a backfilled old cycle: the gate compares with the model now
        metadata["serving_model"] = reports["serving"][0]
        metadata["serving accuracy (%)"] = percent(reports["serving"][1]["accuracy"])
    return dg.MaterializeResult(metadata=metadata)
