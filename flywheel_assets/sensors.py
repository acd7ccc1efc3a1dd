"""feedback_sensor: every new or changed file in the landing zone becomes a flywheel cycle."""

import json
from dataclasses import dataclass, field

import dagster as dg

from flywheel_assets.assets.step01_reviewer_feedback import reviewer_feedback
from flywheel_assets.jobs import CYCLE_JOB
from flywheel_assets.partitions import cycles
from flywheel_core.feedback.batches import batch_key, skip_reason
from flywheel_core.hashing import sha256_bytes
from resources.feedback_landing import FeedbackLanding, LandedFile
from resources.lineage.feedback import batch_row
from resources.lineage.store import LineageStore

MAX_NEW_PER_TICK = 50
FILE_TAG = "flywheel/feedback_file"
SHA_TAG = "flywheel/feedback_sha256"


@dataclass
class TickPlan:
    """What one tick found: new batches (key, file, sha), files skipped (with why), the cursor."""

    new: list[tuple[str, LandedFile, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)
    pending: int = 0


def plan_tick(
    files: list[LandedFile],
    seen: dict[str, str],
    landing: FeedbackLanding,
    known: dict[str, str],
    max_new: int = MAX_NEW_PER_TICK,
) -> TickPlan:
    """Read only files whose signature changed; content already registered is skipped."""
    plan = TickPlan(seen=dict(seen))
    changed = [f for f in files if seen.get(f.name) != f.signature]
    for file in changed:
        if len(plan.new) >= max_new:
            plan.pending += 1
            continue
        if reason := skip_reason(file.name):
            plan.seen[file.name] = file.signature
            plan.skipped.append(f"{file.name}: {reason}")
            continue
        if file.size == 0:
            plan.seen[file.name] = file.signature
            plan.skipped.append(f"{file.name}: empty file")
            continue
        try:
            sha = sha256_bytes(landing.read_bytes(file.name))
        except Exception as exc:  # vanished or unreadable: not marked seen, retried next tick
            plan.skipped.append(f"{file.name}: unreadable ({type(exc).__name__}: {exc})")
            continue
        plan.seen[file.name] = file.signature
        if sha in known:
            plan.skipped.append(f"{file.name}: same content as cycle {known[sha]}")
            continue
        key = batch_key(file.name, sha)
        known[sha] = key
        plan.new.append((key, file, sha))
    return plan


def _skip_message(files: list[LandedFile], plan: TickPlan) -> str:
    if not files:
        return "the landing zone holds no .jsonl or .csv files"
    if not plan.skipped:
        return f"{len(files)} file(s), none new or changed since the last tick"
    shown = "; ".join(plan.skipped[:10])
    more = f" (+{len(plan.skipped) - 10} more)" if len(plan.skipped) > 10 else ""
    return f"no new feedback content: {shown}{more}"


def _run_request(key: str, file: LandedFile, sha: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=key,
        partition_key=key,
        asset_selection=[reviewer_feedback.key],
        tags={FILE_TAG: file.name, SHA_TAG: sha},
    )


@dg.sensor(
    name="feedback_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    # A run of the cycle job (its reviewer_feedback step): named `flywheel_cycle` in the UI, not
    # `__ASSET_JOB`, and carrying the job's flywheel tag, so it queues with the cycle's runs.
    job_name=CYCLE_JOB,
    description="Turns each new or changed reviewer-feedback file into a flywheel cycle: a "
    "`flywheel_cycle` run of the batch's reviewer_feedback, tagged with the file.",
)
def feedback_sensor(
    context: dg.SensorEvaluationContext, feedback_landing: FeedbackLanding, store: LineageStore
) -> dg.SensorResult | dg.SkipReason:
    files = feedback_landing.list_files()
    seen = json.loads(context.cursor) if context.cursor else {}
    existing = set(context.instance.get_dynamic_partitions(cycles.name))
    known = {sha: key for sha, key in store.registered_batches().items() if key in existing}
    plan = plan_tick(files, seen, feedback_landing, known)
    cursor = json.dumps(plan.seen, separators=(",", ":"), sort_keys=True)
    if not plan.new:
        context.update_cursor(cursor)
        return dg.SkipReason(_skip_message(files, plan))
    store.record_batches(
        [batch_row(k, f, feedback_landing.uri(f.name), sha) for k, f, sha in plan.new]
    )
    for key, file, _ in plan.new:
        context.log.info(f"{file.name} -> new cycle {key}")
    for skipped in plan.skipped:  # a resent duplicate in the same tick as a new file
        context.log.info(f"skipped {skipped}")
    if plan.pending:
        context.log.info(f"{plan.pending} more changed file(s) left for the next tick")
    return dg.SensorResult(
        run_requests=[_run_request(k, f, sha) for k, f, sha in plan.new],
        dynamic_partitions_requests=[cycles.build_add_request([k for k, _, _ in plan.new])],
        cursor=cursor,
    )
