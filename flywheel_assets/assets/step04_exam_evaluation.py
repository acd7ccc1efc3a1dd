"""exam_evaluation: exact metrics by code; proficiency, feedback and new examples by the teacher."""

import json
from collections import Counter

import dagster as dg
import polars as pl

from flywheel_assets.assets.step03_student_answers import student_answers
from flywheel_assets.metadata import (
    confusion_table,
    log_teacher,
    number,
    percent,
    table_value,
    teacher_metadata,
)
from flywheel_assets.partitions import cycle_asset
from flywheel_core.domain import (
    SOURCE_MATERIAL,
    EvaluationRequest,
    EvaluationResult,
    GradedQuestion,
)
from flywheel_core.prompts import prompts_version
from flywheel_core.reporting.plots import confusion_heatmap
from flywheel_core.severity import SEVERITIES
from flywheel_core.teaching.metrics import classification_report
from resources.config import FlywheelConfig
from resources.lineage.store import LineageStore
from resources.teacher.base import Teacher, TeacherFailure

VERSION = f"1-{prompts_version('exam_evaluation')}"


def evaluation_row(cycle: str, exam_id: str, report: dict, result: EvaluationResult) -> dict:
    return {
        "cycle": cycle,
        "exam_id": exam_id,
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "proficiency": result.proficiency,
        "feedback": result.feedback,
        "per_class": json.dumps(report["per_class"]),
        "confusion": json.dumps(report["confusion"]),
        "teacher": result.teacher,
        "prompt_sha256": result.prompt_sha256,
        "asset_version": VERSION,
    }


def example_rows(cycle: str, result: EvaluationResult) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                **e.model_dump(exclude=SOURCE_MATERIAL),
                "cycle": cycle,
                "teacher": result.teacher,
                "asset_version": VERSION,
            }
            for e in result.new_examples
        ]
    )


@cycle_asset(VERSION, deps=[student_answers])
def exam_evaluation(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    teacher: Teacher,
    flywheel_config: FlywheelConfig,
) -> dg.MaterializeResult:
    """Accuracy, per-class metrics, confusion matrix, proficiency 1-10, feedback, new examples."""
    cycle = context.partition_key
    settings = flywheel_config.settings()
    graded = store.graded_questions(cycle)
    if graded.is_empty():
        raise dg.Failure(f"cycle {cycle} has no answered exam: materialize student_answers first")
    report = classification_report(graded["severity"].to_list(), graded["predicted"].to_list())
    _, curriculum = store.previous_curriculum(cycle)
    heldout = store.heldout_items()
    exclude = set(curriculum["item_id"]) | set(graded["item_id"]) | set(heldout["item_id"])
    request = EvaluationRequest(
        cycle=cycle,
        graded=[GradedQuestion.model_validate(r) for r in graded.iter_rows(named=True)],
        report=report,
        pool=store.training_pool_items(cycle),
        exclude_ids=sorted(exclude),
        num_new_examples=settings.curriculum.new_examples_per_cycle,
        min_share_per_class=settings.exam.min_share_per_class,
    )
    try:
        result = teacher.evaluate_exam(request, settings.teacher)
    except TeacherFailure as failure:  # keep what the teacher got wrong, then fail
        store.store_quarantine(cycle, "exam_evaluation", VERSION, failure.quarantine)
        raise
    exam_id = graded["exam_id"][0]
    store.replace_rows(
        "evaluations", pl.DataFrame([evaluation_row(cycle, exam_id, report, result)]), cycle=cycle
    )
    store.replace_rows("teacher_examples", example_rows(cycle, result), cycle=cycle)
    store.store_quarantine(cycle, "exam_evaluation", VERSION, result.quarantine)
    log_teacher(context, result.usage, "the set of new examples")
    context.log.info(f"{exam_id}: {result.feedback}")
    per_class_rows = [
        (c, v["precision"], v["recall"], v["f1"], v["support"])
        for c, v in report["per_class"].items()
    ]
    new_counts = {c: sum(e.severity == c for e in result.new_examples) for c in SEVERITIES}
    return dg.MaterializeResult(
        metadata={
            "exam_id": exam_id,
            "accuracy (%)": percent(report["accuracy"]),
            "macro-F1": number(report["macro_f1"]),
            "proficiency": dg.MetadataValue.int(int(result.proficiency)),
            "feedback": dg.MetadataValue.text(result.feedback),
            "per_class": table_value(
                ["severity", "precision", "recall", "F1", "support"], per_class_rows
            ),
            "confusion_matrix": confusion_table(report),
            "confusion_heatmap": dg.MetadataValue.md(confusion_heatmap(report, f"exam of {cycle}")),
            "new_examples": dg.MetadataValue.int(len(result.new_examples)),
            "new_examples_per_severity": dg.MetadataValue.json(new_counts),
            "new_examples_with_explanation": sum(bool(e.explanation) for e in result.new_examples),
            "explanation_sources": dg.MetadataValue.json(
                dict(Counter(e.explanation_source or "none" for e in result.new_examples))
            ),
            "teacher": result.teacher,
            "prompt_sha256": result.prompt_sha256,
            "teacher_notes": result.notes or "none",
            **teacher_metadata(result.usage, len(result.quarantine)),
        }
    )
