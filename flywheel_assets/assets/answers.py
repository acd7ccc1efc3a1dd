"""student_answers: the student deployed at the start of the cycle takes the exam."""

import dagster as dg
import polars as pl

from flywheel_assets import lineage
from flywheel_assets.assets.exam import exam
from flywheel_assets.partitions import cycle_asset
from flywheel_assets.severity import SEVERITIES
from resources.artifact_store import ArtifactStore
from resources.lineage_store import LineageStore
from resources.student import StudentModel

VERSION = "1"


def progress_logger(context: dg.AssetExecutionContext, what: str):
    """A callback that logs scoring progress about every 10%."""
    marks: set[int] = set()

    def on_progress(done: int, total: int) -> None:
        mark = done * 10 // max(total, 1)
        if mark not in marks:
            marks.add(mark)
            context.log.info(f"{what}: {done}/{total}")

    return on_progress


@cycle_asset(VERSION, deps=[exam])
def student_answers(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: StudentModel,
    artifacts: ArtifactStore,
) -> dg.MaterializeResult:
    """One answer per exam question, always one of the four severities, with its probabilities."""
    cycle = context.partition_key
    questions = store.query("SELECT * FROM exams WHERE cycle = ? ORDER BY question_no", [cycle])
    if questions.is_empty():
        raise dg.Failure(f"cycle {cycle} has no exam: materialize `exam` first")
    serving = lineage.serving_adapter(store, cycle)
    adapter_dir = artifacts.local_dir(lineage.adapter_ref(serving)) if serving else None
    results, seconds = student.rate(
        list(zip(questions["code"], questions["review"], strict=True)),
        adapter_dir=adapter_dir,
        on_progress=progress_logger(context, "exam"),
    )
    rows = questions.select("cycle", "exam_id", "question_no", "item_id").with_columns(
        predicted=pl.Series([r["severity"] for r in results]),
        **{f"p_{c}": pl.Series([r["probs"][c] for r in results]) for c in SEVERITIES},
        student=pl.lit(student.base_model_id()),
        adapter_sha256=pl.lit(serving["adapter_sha256"] if serving else None, dtype=pl.String),
        asset_version=pl.lit(VERSION),
    )
    store.replace_rows("answers", rows, cycle=cycle)
    answered = {c: int((rows["predicted"] == c).sum()) for c in SEVERITIES}
    return dg.MaterializeResult(
        metadata={
            "answers": rows.height,
            "answer_distribution": dg.MetadataValue.json(answered),
            "student": student.base_model_id(),
            "adapter_sha256": serving["adapter_sha256"] if serving else "none (base model)",
            "adapter_deployed_in_cycle": serving["deployed_in"] if serving else "none",
            "inference_seconds": round(seconds, 2),
            "answers_per_second": round(rows.height / max(seconds, 1e-9), 2),
        }
    )
