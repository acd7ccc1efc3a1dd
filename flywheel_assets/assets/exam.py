"""exam: the teacher writes the student's exam for this cycle."""

import hashlib

import dagster as dg
import polars as pl

from flywheel_assets import lineage
from flywheel_assets.assets.feedback import reviewer_feedback
from flywheel_assets.assets.seed import seed_corpus
from flywheel_assets.markdown import table
from flywheel_assets.partitions import cycle_asset
from flywheel_assets.prompts import prompts_version
from flywheel_assets.severity import SEVERITIES
from flywheel_assets.teacher_metadata import store_quarantine, teacher_metadata
from resources.flywheel_config import FlywheelConfig
from resources.lineage_store import LineageStore
from resources.teacher import SOURCE_MATERIAL, ExamRequest, Teacher

VERSION = f"2-{prompts_version('exam_generation')}"


@cycle_asset(VERSION, deps=[reviewer_feedback, seed_corpus])
def exam(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    teacher: Teacher,
    flywheel_config: FlywheelConfig,
) -> dg.MaterializeResult:
    """Questions balanced over severities, tilted toward those the last evaluation found weak."""
    cycle = context.partition_key
    settings = flywheel_config.settings().exam
    previous = lineage.previous_evaluation(store, cycle)
    prev_curriculum_cycle, prev_curriculum = lineage.previous_curriculum(store, cycle)
    request = ExamRequest(
        cycle=cycle,
        num_questions=settings.num_questions,
        min_share_per_class=settings.min_share_per_class,
        pool=lineage.to_items(lineage.training_pool(store, cycle)),
        avoid_ids=prev_curriculum["item_id"].to_list(),
        previous_proficiency=previous["proficiency"] if previous else None,
        previous_feedback=previous["feedback"] if previous else None,
        previous_strengths=(
            {c: v["f1"] for c, v in previous["per_class"].items()} if previous else None
        ),
    )
    result = teacher.write_exam(request)
    ids = [q.item_id for q in result.questions]
    exam_id = f"{cycle}/exam-{hashlib.sha256('|'.join(ids).encode()).hexdigest()[:12]}"
    rows = pl.DataFrame(
        [
            {
                **q.model_dump(exclude=SOURCE_MATERIAL | {"explanation", "explanation_source"}),
                "cycle": cycle,
                "exam_id": exam_id,
                "question_no": i,
                "teacher": result.teacher,
                "prompt_sha256": result.prompt_sha256,
                "asset_version": VERSION,
            }
            for i, q in enumerate(result.questions, start=1)
        ]
    )
    store.replace_rows("exams", rows, cycle=cycle)
    store_quarantine(store, cycle, "exam", VERSION, result.quarantine)
    _log_teacher(context, result.notes, result.usage)
    counts = {c: int((rows["severity"] == c).sum()) for c in SEVERITIES}
    context.log.info(f"{exam_id}: {rows.height} questions {counts}")
    return dg.MaterializeResult(
        metadata={
            "exam_id": exam_id,
            "questions": rows.height,
            "per_severity": dg.MetadataValue.json(counts),
            "requested_per_severity": dg.MetadataValue.json(result.allocation),
            "teacher": result.teacher,
            "prompt_sha256": result.prompt_sha256,
            "teacher_notes": result.notes or "none",
            **teacher_metadata(result.usage, len(result.quarantine)),
            "pool_size": len(request.pool),
            "previous_evaluation_cycle": previous["cycle"] if previous else "none",
            "previous_proficiency": previous["proficiency"] if previous else 0,
            "previous_curriculum_cycle": prev_curriculum_cycle or "none",
            "preview": dg.MetadataValue.md(
                table(
                    ["#", "severity", "review"],
                    [
                        (i + 1, q.severity, q.review[:100])
                        for i, q in enumerate(result.questions[:8])
                    ],
                )
            ),
        }
    )


def _log_teacher(context: dg.AssetExecutionContext, notes: str, usage) -> None:
    if usage and usage.budget_stop:
        context.log.warning(f"teacher budget: {usage.budget_stop}; the exam is partial")
    if notes:
        context.log.info(f"teacher: {notes}")
