"""student_answers: the student deployed at the start of the cycle takes the exam."""

import dagster as dg
import polars as pl

from flywheel_assets.assets.step02_exam import exam
from flywheel_assets.metadata import progress_logger
from flywheel_assets.partitions import cycle_asset
from flywheel_core.severity import SEVERITIES
from resources.artifacts.base import ArtifactStore
from resources.config import FlywheelConfig
from resources.lineage.store import LineageStore
from resources.student import StudentModel

VERSION = "1"


@cycle_asset(VERSION, deps=[exam])
def student_answers(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: StudentModel,
    artifacts: ArtifactStore,
    flywheel_config: FlywheelConfig,
) -> dg.MaterializeResult:
    """One answer per exam question, always one of the four severities, with its probabilities."""
    cycle = context.partition_key
    runner = student.runner(flywheel_config.settings().student)
    questions = store.exam_questions(cycle)
    if questions.is_empty():
        raise dg.Failure(f"cycle {cycle} has no exam: materialize `exam` first")
    serving = store.serving_adapter(cycle)
    adapter_dir = artifacts.adapter_dir(serving) if serving else None
    results, seconds = runner.rate(
        list(zip(questions["code"], questions["review"], strict=True)),
        adapter_dir=adapter_dir,
        on_progress=progress_logger(context, "exam"),
    )
    rows = questions.select("cycle", "exam_id", "question_no", "item_id").with_columns(
        predicted=pl.Series([r["severity"] for r in results]),
        **{f"p_{c}": pl.Series([r["probs"][c] for r in results]) for c in SEVERITIES},
        student=pl.lit(runner.base_model_id()),
        adapter_sha256=pl.lit(serving["adapter_sha256"] if serving else None, dtype=pl.String),
        asset_version=pl.lit(VERSION),
    )
    store.replace_rows("answers", rows, cycle=cycle)
    answered = {c: int((rows["predicted"] == c).sum()) for c in SEVERITIES}
    return dg.MaterializeResult(
        metadata={
            "answers": rows.height,
            "answer_distribution": dg.MetadataValue.json(answered),
            "student": runner.base_model_id(),
            "student_batch_size": runner.settings.batch_size,
            "student_max_prompt_tokens": runner.max_prompt_tokens,
            "student_dtype": runner.dtype_name(),
            "adapter_sha256": serving["adapter_sha256"] if serving else "none (base model)",
            "adapter_deployed_in_cycle": serving["deployed_in"] if serving else "none",
            "inference_seconds": round(seconds, 2),
            "answers_per_second": round(rows.height / max(seconds, 1e-9), 2),
        }
    )
