"""deployed_student: the cycle's adapter, published as a new Triton model version and put live.

Order: the adapter's sha256 is verified (artifact store, the copy in the repository, and again
right before the load), the version is published, pinned and loaded through Triton's
model-control API, and a smoke review must answer; only then is a `deployments` row written.
Any failure leaves the previous version serving and fails the asset with the reason.

Without a running server (the offline demo before `flywheel serve start`): when the
`triton_server` resource is not `required`, the version is published and pinned - the server
loads it when it starts - and the row says `served = false`; when required, the asset fails.
The blocking `better_than_deployed` check on `heldout_evaluation` runs first: a candidate that
fails it never reaches this asset.

Deployment only moves forward: the cycle is compared with the model serving now, and an old
cycle re-materialized (a backfill) never replaces a newer cycle's deployment - it records "not
deployed: a newer cycle serves" instead. Only `flywheel rollback` moves serving back. The
deployment history is append-only. Its automation condition (`newest_cycles_only`) keeps eager
automation from even requesting an old cycle.
"""

import dagster as dg

from flywheel_assets.assets.step07_heldout_evaluation import heldout_evaluation
from flywheel_assets.partitions import cycle_asset, not_older_than_materialized
from flywheel_core.ml.explanation_prompt import DEFAULT_MAX_EXPLANATION_TOKENS
from flywheel_core.teaching.deploy_order import refuse_reason
from resources.artifacts.base import ArtifactStore
from resources.config import FlywheelConfig
from resources.lineage.deployments import DEPLOY, deployment_row
from resources.lineage.store import LineageStore
from resources.student import StudentModel
from resources.triton.repository import TritonModelRepository
from resources.triton.rollout import go_live
from resources.triton.server import TritonServer

VERSION = "3"  # 3: the served model has the EXPLAIN input and EXPLANATION output


def not_deployed(
    context: dg.AssetExecutionContext, adapter: dict, serving: dict | None, reason: str
) -> dg.MaterializeResult:
    """Nothing moves: serving and the deployment history stay as they are."""
    context.log.info(reason)
    metadata = {
        "deployed": False,
        "reason": reason,
        "serving_now": f"v{serving['model_version']} ({serving['deployed_in']})"
        if serving
        else "base model",
        "adapter_sha256": adapter["adapter_sha256"],
        "finetune_skipped_reason": adapter.get("finetune_skipped_reason") or "none",
    }
    if serving:
        metadata["model_version"] = dg.MetadataValue.int(int(serving["model_version"]))
    return dg.MaterializeResult(metadata=metadata)


@cycle_asset(
    VERSION,
    deps=[heldout_evaluation],
    automation_condition=dg.AutomationCondition.eager() & not_older_than_materialized(),
)
def deployed_student(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: StudentModel,
    artifacts: ArtifactStore,
    model_repository: TritonModelRepository,
    triton_server: TritonServer,
    flywheel_config: FlywheelConfig,
) -> dg.MaterializeResult:
    """The Triton model version serving the cycle's adapter, recorded in the lineage store."""
    cycle = context.partition_key
    runner = student.runner(flywheel_config.settings().student)
    adapter = store.adapter(cycle)
    if adapter is None:
        raise dg.Failure(f"cycle {cycle} has no adapter to deploy")
    serving = store.serving_now()
    if serving is not None and serving["adapter_sha256"] == adapter["adapter_sha256"]:
        reason = adapter.get("finetune_skipped_reason") or "same adapter"
        return not_deployed(
            context,
            adapter,
            serving,
            f"not deployed: v{serving['model_version']} already serves this adapter ({reason})",
        )
    refused = refuse_reason(cycle, store.cycle_seq(cycle), store.newest_deployed(), serving)
    if refused:
        return not_deployed(context, adapter, serving, refused)
    published = model_repository.publish(
        artifacts.adapter_dir(adapter),  # verifies sha256
        adapter["adapter_sha256"],
        runner.base_model_path(),
        runner.max_prompt_tokens,
        extra={
            "cycle": cycle,
            "base_model": adapter["base_model"],
            "num_threads": runner.num_threads,
            "dtype": runner.dtype_name(),
            "explanation_max_new_tokens": DEFAULT_MAX_EXPLANATION_TOKENS,
        },
    )
    rollout = go_live(model_repository, triton_server, published.version)
    store.record_deploy(
        deployment_row(
            cycle,
            adapter["adapter_sha256"],
            model_repository.model_name,
            model_repository.repository_dir,
            published.version,
            rollout.served,
            DEPLOY,
            VERSION,
            f"dagster run {context.run_id}",
        )
    )
    where = triton_server.http_url if rollout.served else "nowhere yet (no Triton server running)"
    context.log.info(
        f"{published.model_name} v{published.version} serves {adapter['uri']}: {where}"
    )
    return dg.MaterializeResult(
        metadata={
            "deployed": True,
            "model_name": published.model_name,
            "model_version": dg.MetadataValue.int(int(published.version)),
            "previous_version": rollout.previous if rollout.previous is not None else "none",
            "replaced": f"v{serving['model_version']} ({serving['deployed_in']})"
            if serving
            else "base model",
            "served": rollout.served,
            "served_by": where,
            "smoke_severity": rollout.smoke.severity if rollout.smoke else "not run",
            "load_seconds": dg.MetadataValue.float(round(rollout.load_seconds, 2)),
            "version_path": dg.MetadataValue.path(published.path),
            "adapter_sha256": adapter["adapter_sha256"],
            "adapter_from_cycle": cycle,
        }
    )
