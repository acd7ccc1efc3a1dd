"""lineage_audit: the deployed adapter's whole lineage, as a markdown report in the UI."""

import dagster as dg

from flywheel_assets.assets.step09_deployed_student import deployed_student
from resources.lineage.store import LineageStore

VERSION = "1"


@dg.asset(
    group_name="audit",
    code_version=VERSION,
    deps=[deployed_student],
    automation_condition=dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.in_progress(),
)
def lineage_audit(context: dg.AssetExecutionContext, store: LineageStore) -> dg.MaterializeResult:
    """Feedback batches, exams, evaluations, curriculum, training and sha256 of what serves now."""
    with store.reading():  # one snapshot: the adapter and its chain as of the same commit
        adapter = store.deployed_adapter()
        if adapter is None:
            report = dg.MetadataValue.md("Nothing deployed.")
            return dg.MaterializeResult(metadata={"report": report})
        context.log.info(f"auditing adapter {adapter['adapter_sha256'][:12]} ({adapter['cycle']})")
        report = store.audit_report(adapter)
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(report),
            "adapter_sha256": adapter["adapter_sha256"],
            "cycle": adapter["cycle"],
            "model_version": dg.MetadataValue.int(int(adapter["model_version"])),
            "serving_now": bool(adapter["serving_now"]),
        }
    )
