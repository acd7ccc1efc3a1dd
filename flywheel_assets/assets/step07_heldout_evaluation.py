"""heldout_evaluation: the new adapter and the serving model on every evaluation set.

The sets: the seed corpus's held-out split (`seed`), the reviewers' held-out feedback
(`reviewers`: every batch's hash-selected share, accumulated up to this cycle) and any set
registered under `heldout.extra_sets`. Each model answers every item once (answers are cached by
model and item); each set gets accuracy, macro-F1, per-class recall, the majority baseline, 95%
intervals and the answer distribution, and the paired difference the gate reads.

Roles: `incoming` is the model serving when the cycle started (its lineage), `candidate` the
cycle's adapter, and `serving` the model serving now when that differs from `incoming` (a
backfilled old cycle). The candidate is compared with the model serving now: `serving` when
present, else `incoming`; the candidate rows' paired difference is against that model.
"""

import json

import dagster as dg
import polars as pl

from flywheel_assets.assets.step06_lora_adapter import lora_adapter
from flywheel_assets.metadata import number, percent, progress_logger, table_value
from flywheel_assets.partitions import cycle_asset
from flywheel_core.ml.student import Student
from flywheel_core.reporting.markdown import table
from flywheel_core.reporting.plots import accuracy_per_set
from flywheel_core.settings import FlywheelSettings
from flywheel_core.severity import SEVERITIES
from flywheel_core.teaching.gate import decision_set
from flywheel_core.teaching.heldout_sets import (
    REVIEWERS_SET,
    SEED_SET,
    compare_on_set,
    load_eval_set,
    score_set,
)
from resources.artifacts.base import ArtifactStore
from resources.config import FlywheelConfig
from resources.lineage.store import LineageStore
from resources.student import StudentModel

VERSION = "2"


def model_ref(student: Student, adapter: dict | None) -> str:
    """How the lineage names a model: its adapter's sha256, or the base model's id."""
    return f"adapter:{adapter['adapter_sha256']}" if adapter else f"base:{student.base_model_id()}"


def evaluation_sets(store: LineageStore, cycle: str, settings: FlywheelSettings) -> dict:
    """name -> items (item_id, code, review, severity) of every set scored this cycle."""
    sets = {SEED_SET: store.heldout_items(settings.heldout.max_items)}
    reviewers = store.reviewer_heldout_items(cycle)
    if reviewers.height:
        sets[REVIEWERS_SET] = reviewers
    for name, path in settings.heldout.extra_sets.items():
        sets[name] = load_eval_set(name, path)
    return sets


def predict(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: Student,
    artifacts: ArtifactStore,
    items: pl.DataFrame,
    adapter: dict | None,
) -> tuple[str, dict[str, str], float]:
    """item_id -> answer of one model on the items; only items it never answered are run."""
    ref = model_ref(student, adapter)
    cached = store.heldout_predictions(ref)
    missing = items.filter(~pl.col("item_id").is_in(cached["item_id"].to_list()))
    seconds = 0.0
    if missing.height:
        adapter_dir = artifacts.adapter_dir(adapter) if adapter else None
        results, seconds = student.rate(
            list(zip(missing["code"], missing["review"], strict=True)),
            adapter_dir=adapter_dir,
            on_progress=progress_logger(context, f"held-out [{ref[:20]}]"),
        )
        fresh = missing.select("item_id", "severity").with_columns(
            predicted=pl.Series([r["severity"] for r in results], dtype=pl.String),
            model_ref=pl.lit(ref),
        )
        store.append_rows("heldout_scores", fresh)
        cached = pl.concat([cached, fresh.select(cached.columns)])
    return ref, dict(zip(cached["item_id"], cached["predicted"], strict=True)), seconds


def result_rows(cycle: str, refs: dict, comparisons: dict, deciding: str) -> pl.DataFrame:
    rows = []
    for name, comparison in comparisons.items():
        for role in ("incoming", "candidate"):
            score = comparison[role]
            rows.append(
                {
                    "cycle": cycle,
                    "eval_set": name,
                    "role": role,
                    "model_ref": refs[role],
                    "items": score["n"],
                    "accuracy": score["accuracy"],
                    "accuracy_low": score["accuracy_low"],
                    "accuracy_high": score["accuracy_high"],
                    "macro_f1": score["macro_f1"],
                    "macro_f1_low": score["macro_f1_low"],
                    "macro_f1_high": score["macro_f1_high"],
                    "majority": score["majority"],
                    "per_class": json.dumps(score["per_class"]),
                    "answers": json.dumps(score["answers"]),
                    "class_shares": json.dumps(score["class_shares"]),
                    "delta": comparison["delta"] if role == "candidate" else None,
                    "delta_low": comparison["delta_low"] if role == "candidate" else None,
                    "delta_high": comparison["delta_high"] if role == "candidate" else None,
                    "decides": name == deciding,
                    "asset_version": VERSION,
                }
            )
    return pl.DataFrame(rows)


def started_rows(
    cycle: str, ref: str, answers: dict[str, str], sets: dict, confidence: float, deciding: str
) -> pl.DataFrame:
    """Rows of the model that served when the cycle started, when the gate compares with a
    newer one (role `incoming`, for the lineage)."""
    rows = []
    for name, s in sets.items():
        score = score_set(s["severity"].to_list(), [answers[i] for i in s["item_id"]], confidence)
        rows.append(
            {
                "cycle": cycle,
                "eval_set": name,
                "role": "incoming",
                "model_ref": ref,
                "items": score["n"],
                "accuracy": score["accuracy"],
                "macro_f1": score["macro_f1"],
                "per_class": json.dumps(score["per_class"]),
                "answers": json.dumps(score["answers"]),
                "majority": score["majority"],
                "decides": name == deciding,
                "asset_version": VERSION,
            }
        )
    return pl.DataFrame(rows)


def sets_table(comparisons: dict, deciding: str) -> str:
    def answers(score: dict) -> str:
        return " ".join(f"{c[:4]} {score['answers'][c]:.0%}" for c in SEVERITIES)

    rows = []
    for name, c in comparisons.items():
        inc, cand = c["incoming"], c["candidate"]
        rows.append(
            (
                f"{name} (gate)" if name == deciding else name,
                cand["n"],
                f"{cand['majority']:.1%}",
                f"{inc['accuracy']:.1%} [{inc['accuracy_low']:.1%}, {inc['accuracy_high']:.1%}]",
                f"{cand['accuracy']:.1%} [{cand['accuracy_low']:.1%}, {cand['accuracy_high']:.1%}]",
                f"{100 * c['delta']:+.1f} [{100 * c['delta_low']:+.1f}, "
                f"{100 * c['delta_high']:+.1f}]",
                f"{inc['macro_f1']:.3f} -> {cand['macro_f1']:.3f} "
                f"[{cand['macro_f1_low']:.3f}, {cand['macro_f1_high']:.3f}]",
                answers(inc),
                answers(cand),
            )
        )
    header = [
        "set",
        "items",
        "majority class",
        "serving accuracy (95%)",
        "candidate accuracy (95%)",
        "difference, points (95%)",
        "macro-F1 serving -> candidate (95%)",
        "serving answers",
        "candidate answers",
    ]
    return table(header, rows)


def recall_rows(comparisons: dict) -> list[tuple]:
    return [
        (
            name,
            c,
            round(cmp["incoming"]["per_class"][c]["recall"], 3),
            round(cmp["candidate"]["per_class"][c]["recall"], 3),
        )
        for name, cmp in comparisons.items()
        for c in SEVERITIES
    ]


def history_plot(store: LineageStore, cycle: str, names: list[str]) -> str:
    series = {}
    for name in names:
        rows = (
            store.heldout_history(cycle, eval_set=name)
            .filter(pl.col("role") == "candidate")
            .with_columns(  # rows from before intervals were stored: a point, no bar
                pl.col("accuracy_low").fill_null(pl.col("accuracy")),
                pl.col("accuracy_high").fill_null(pl.col("accuracy")),
                pl.col("majority").fill_null(0.0),
            )
        )
        series[name] = {
            "cycles": rows["cycle"].to_list(),
            "accuracy": rows["accuracy"].to_list(),
            "low": rows["accuracy_low"].to_list(),
            "high": rows["accuracy_high"].to_list(),
            "majority": rows["majority"].to_list(),
        }
    return accuracy_per_set(series)


@cycle_asset(VERSION, deps=[lora_adapter])
def heldout_evaluation(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: StudentModel,
    artifacts: ArtifactStore,
    flywheel_config: FlywheelConfig,
) -> dg.MaterializeResult:
    """The candidate adapter vs. the serving model on the seed split, the reviewers' held-out
    feedback and any registered set: accuracy, macro-F1, intervals, answer distributions."""
    cycle = context.partition_key
    settings = flywheel_config.settings()
    runner = student.runner(settings.student)
    candidate = store.adapter(cycle)
    if candidate is None:
        raise dg.Failure(f"cycle {cycle} has no adapter: materialize lora_adapter first")
    sets = evaluation_sets(store, cycle, settings)
    items = pl.concat([s.select("item_id", "code", "review", "severity") for s in sets.values()])
    items = items.unique("item_id", keep="first", maintain_order=True)
    started_with, now = store.serving_adapter(cycle), store.serving_now()
    roles = [("incoming", started_with), ("candidate", candidate)]
    if now is not None and now["uri"] and model_ref(runner, now) != model_ref(runner, started_with):
        roles.append(("serving", now))  # a newer deployment than this cycle's incoming model
    refs, answers, seconds = {}, {}, 0.0
    for role, adapter in roles:
        refs[role], answers[role], took = predict(context, store, runner, artifacts, items, adapter)
        seconds += took
    baseline = "serving" if "serving" in refs else "incoming"
    comparisons = {
        name: compare_on_set(
            s["severity"].to_list(),
            [answers[baseline][i] for i in s["item_id"]],
            [answers["candidate"][i] for i in s["item_id"]],
            settings.heldout.confidence,
        )
        for name, s in sets.items()
    }
    deciding = decision_set(comparisons, settings.gate)
    rows = result_rows(cycle, {**refs, "incoming": refs[baseline]}, comparisons, deciding)
    if baseline == "serving":  # the baseline rows are the model serving now; keep the lineage's
        rows = rows.with_columns(
            role=pl.when(pl.col("role") == "incoming")
            .then(pl.lit("serving"))
            .otherwise(pl.col("role"))
        )
        rows = pl.concat(
            [
                rows,
                started_rows(
                    cycle,
                    refs["incoming"],
                    answers["incoming"],
                    sets,
                    settings.heldout.confidence,
                    deciding,
                ),
            ],
            how="diagonal",
        )
    store.replace_rows("heldout_results", rows, cycle=cycle)
    for name, c in comparisons.items():
        context.log.info(
            f"{name} ({c['candidate']['n']} items): accuracy {c['incoming']['accuracy']:.1%} -> "
            f"{c['candidate']['accuracy']:.1%}, macro-F1 {c['candidate']['macro_f1']:.3f}"
        )
    seed = comparisons[SEED_SET]
    per_set = {}
    for name, c in comparisons.items():
        per_set[f"{name} items"] = dg.MetadataValue.int(c["candidate"]["n"])
        per_set[f"{name} candidate accuracy (%)"] = percent(c["candidate"]["accuracy"])
        per_set[f"{name} candidate macro-F1"] = number(c["candidate"]["macro_f1"])
        per_set[f"{name} majority-class accuracy (%)"] = percent(c["candidate"]["majority"])
    return dg.MaterializeResult(
        metadata={
            "heldout_items": dg.MetadataValue.int(seed["candidate"]["n"]),
            "candidate accuracy (%)": percent(seed["candidate"]["accuracy"]),
            "candidate macro-F1": number(seed["candidate"]["macro_f1"]),
            "incoming accuracy (%)": percent(seed["incoming"]["accuracy"]),
            "incoming macro-F1": number(seed["incoming"]["macro_f1"]),
            "incoming_model": refs["incoming"],
            "compared_with": refs[baseline],
            "majority-class accuracy (%)": percent(seed["candidate"]["majority"]),
            "accuracy gain (points)": number(100 * seed["delta"], 2),
            **per_set,
            "gate_decides_on": deciding,
            "inference_seconds": number(seconds, 2),
            "evaluation_sets": dg.MetadataValue.md(sets_table(comparisons, deciding)),
            "recall_per_severity": table_value(
                ["set", "severity", "serving recall", "candidate recall"],
                recall_rows(comparisons),
            ),
            "accuracy_over_cycles": dg.MetadataValue.md(
                history_plot(store, cycle, list(comparisons))
            ),
            "finetune_skipped_reason": candidate["finetune_skipped_reason"] or "none",
        }
    )
