"""exam: the teacher writes the student's exam for this cycle."""

import hashlib

import dagster as dg
import polars as pl

from flywheel_assets.assets.step00_seed_corpus import seed_corpus
from flywheel_assets.assets.step01_reviewer_feedback import reviewer_feedback
from flywheel_assets.metadata import log_teacher, teacher_metadata
from flywheel_assets.partitions import cycle_asset
from flywheel_core.domain import SOURCE_MATERIAL, ExamRequest, ExamResult
from flywheel_core.prompts import prompts_version
from flywheel_core.reporting.markdown import table
from flywheel_core.severity import SEVERITIES
from resources.config import FlywheelConfig
from resources.lineage.store import LineageStore
from resources.teacher.base import Teacher, TeacherFailure

VERSION = f"2-{prompts_version('exam_generation')}"


def exam_rows(cycle: str, result: ExamResult) -> tuple[str, pl.DataFrame]:
    """The exam id (a hash of its question ids) and one row per question."""
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
    return exam_id, rows


@cycle_asset(VERSION, deps=[reviewer_feedback, seed_corpus])
def exam(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    teacher: Teacher,
    flywheel_config: FlywheelConfig,
) -> dg.MaterializeResult:
    """Questions balanced over severities, tilted toward those the last evaluation found weak."""
    cycle = context.partition_key
    settings = flywheel_config.settings()
    previous = store.previous_evaluation(cycle)
    prev_curriculum_cycle, prev_curriculum = store.previous_curriculum(cycle)
    request = ExamRequest(
        cycle=cycle,
        num_questions=settings.exam.num_questions,
        min_share_per_class=settings.exam.min_share_per_class,
        pool=store.training_pool_items(cycle),
        avoid_ids=prev_curriculum["item_id"].to_list(),
        previous_proficiency=previous["proficiency"] if previous else None,
        previous_feedback=previous["feedback"] if previous else None,
        previous_strengths=(
            {c: v["f1"] for c, v in previous["per_class"].items()} if previous else None
        ),
    )
    try:
        result = teacher.write_exam(request, settings.teacher)
    except TeacherFailure as failure:  # keep what the teacher got wrong, then fail
        store.store_quarantine(cycle, "exam", VERSION, failure.quarantine)
        raise
    exam_id, rows = exam_rows(cycle, result)
    store.replace_rows("exams", rows, cycle=cycle)
    store.store_quarantine(cycle, "exam", VERSION, result.quarantine)
    log_teacher(context, result.usage, "the exam")
    if result.notes:
        context.log.info(f"teacher: {result.notes}")
    counts = {c: int((rows["severity"] == c).sum()) for c in SEVERITIES}
    context.log.info(f"{exam_id}: {rows.height} questions {counts}")
    preview = [(i + 1, q.severity, q.review[:100]) for i, q in enumerate(result.questions[:8])]
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
            "preview": dg.MetadataValue.md(table(["#", "severity", "review"], preview)),
        }
    )
