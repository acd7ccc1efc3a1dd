"""deployed_student: the cycle's adapter published as a new version in the Triton repository."""

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from flywheel_assets import lineage
from flywheel_assets.assets.heldout import heldout_evaluation
from flywheel_assets.partitions import cycle_asset
from resources.artifact_store import ArtifactStore
from resources.lineage_store import LineageStore
from resources.student import StudentModel
from resources.triton_repository import TritonModelRepository

VERSION = "1"


def keep_serving(
    context: dg.AssetExecutionContext, store: LineageStore, adapter: dict, serving: dict
) -> dg.MaterializeResult:
    """The cycle's adapter already serves (fine-tune skipped): no new version, no deployment row."""
    cycle = context.partition_key
    store.replace_rows("deployments", pl.DataFrame(), cycle=cycle)
    reason = adapter.get("finetune_skipped_reason") or "same adapter"
    context.log.info(f"no new deployment: v{serving['model_version']} already serves it ({reason})")
    return dg.MaterializeResult(
        metadata={
            "deployed": False,
            "finetune_skipped_reason": reason,
            "model_version": serving["model_version"],
            "adapter_sha256": adapter["adapter_sha256"],
            "serving_since_cycle": serving["deployed_in"],
        }
    )


@cycle_asset(VERSION, deps=[heldout_evaluation])
def deployed_student(
    context: dg.AssetExecutionContext,
    store: LineageStore,
    student: StudentModel,
    artifacts: ArtifactStore,
    model_repository: TritonModelRepository,
) -> dg.MaterializeResult:
    """The Triton model version serving the cycle's adapter, recorded in the lineage store."""
    cycle = context.partition_key
    adapters = store.query("SELECT * FROM adapters WHERE cycle = ?", [cycle])
    if adapters.is_empty():
        raise dg.Failure(f"cycle {cycle} has no adapter to deploy")
    adapter = adapters.row(0, named=True)
    serving = lineage.serving_adapter(store, cycle)
    if serving is not None and serving["adapter_sha256"] == adapter["adapter_sha256"]:
        return keep_serving(context, store, adapter, serving)
    adapter_dir = artifacts.local_dir(lineage.adapter_ref(adapter))  # verifies sha256
    published = model_repository.publish(
        adapter_dir,
        adapter["adapter_sha256"],
        student.base_model_path(),
        student.max_prompt_tokens,
        extra={"cycle": cycle, "base_model": adapter["base_model"]},
    )
    row = {
        "cycle": cycle,
        "adapter_sha256": adapter["adapter_sha256"],
        "model_name": published.model_name,
        "model_version": published.version,
        "repository": model_repository.repository_dir,
        "deployed_at": datetime.now(UTC),
        "asset_version": VERSION,
    }
    store.replace_rows("deployments", pl.DataFrame([row]), cycle=cycle)
    context.log.info(f"{published.model_name} v{published.version} serves {adapter['uri']}")
    return dg.MaterializeResult(
        metadata={
            "deployed": True,
            "model_name": published.model_name,
            "model_version": published.version,
            "version_path": dg.MetadataValue.path(published.path),
            "adapter_sha256": adapter["adapter_sha256"],
            "adapter_from_cycle": cycle,
        }
    )
