"""exam_evaluation: exact metrics by code; proficiency, feedback and new examples by the teacher."""

import json
from collections import Counter

import dagster as dg
import polars as pl

from flywheel_assets import lineage
from flywheel_assets.assets.answers import student_answers
from flywheel_assets.markdown import table
from flywheel_assets.partitions import cycle_asset
from flywheel_assets.plots import confusion_heatmap
from flywheel_assets.prompts import prompts_version
from flywheel_assets.severity import SEVERITIES
from flywheel_assets.teacher_metadata import store_quarantine, teacher_metadata
from flywheel_assets.teaching.metrics import classification_report, confusion_markdown
from resources.flywheel_config import FlywheelConfig
from resources.lineage_store import LineageStore
from resources.teacher import SOURCE_MATERIAL, EvaluationRequest, GradedQuestion, Teacher

VERSION = f"1-{prompts_version('exam_evaluation')}"


def graded_questions(store: LineageStore, cycle: str) -> pl.DataFrame:
    return store.query(
        """
        SELECT e.exam_id, e.question_no, e.item_id, e.source, e.code, e.review, e.severity,
               a.predicted
        FROM exams e JOIN answers a
          ON a.cycle = e.cycle AND a.exam_id = e.exam_id AND a.question_no = e.question_no
        WHERE e.cycle = ? ORDER BY e.question_no
        """,
        [cycle],
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
    graded = graded_questions(store, cycle)
    if graded.is_empty():
        raise dg.Failure(f"cycle {cycle} has no answered exam: materialize student_answers first")
    report = classification_report(graded["severity"].to_list(), graded["predicted"].to_list())
    _, curriculum = lineage.previous_curriculum(store, cycle)
    heldout = lineage.heldout_items(store, None)
    exclude = set(curriculum["item_id"]) | set(graded["item_id"]) | set(heldout["item_id"])
    result = teacher.evaluate_exam(
        EvaluationRequest(
            cycle=cycle,
            graded=[GradedQuestion.model_validate(r) for r in graded.iter_rows(named=True)],
            report=report,
            pool=lineage.to_items(lineage.training_pool(store, cycle)),
            exclude_ids=sorted(exclude),
            num_new_examples=settings.curriculum.new_examples_per_cycle,
            min_share_per_class=settings.exam.min_share_per_class,
        )
    )
    exam_id = graded["exam_id"][0]
    store.replace_rows(
        "evaluations",
        pl.DataFrame(
            [
                {
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
            ]
        ),
        cycle=cycle,
    )
    examples = pl.DataFrame(
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
    store.replace_rows("teacher_examples", examples, cycle=cycle)
    store_quarantine(store, cycle, "exam_evaluation", VERSION, result.quarantine)
    if result.usage and result.usage.budget_stop:
        context.log.warning(f"teacher budget: {result.usage.budget_stop}; examples are partial")
    context.log.info(f"{exam_id}: {result.feedback}")
    per_class_rows = [
        (c, v["precision"], v["recall"], v["f1"], v["support"])
        for c, v in report["per_class"].items()
    ]
    new_counts = {c: sum(e.severity == c for e in result.new_examples) for c in SEVERITIES}
    return dg.MaterializeResult(
        metadata={
            "exam_id": exam_id,
            "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"],
            "proficiency": result.proficiency,
            "feedback": dg.MetadataValue.text(result.feedback),
            "per_class": dg.MetadataValue.md(
                table(["severity", "precision", "recall", "F1", "support"], per_class_rows)
            ),
            "confusion_matrix": dg.MetadataValue.md(
                confusion_markdown(report) + "\n\n" + confusion_heatmap(report, f"exam of {cycle}")
            ),
            "new_examples": len(result.new_examples),
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
