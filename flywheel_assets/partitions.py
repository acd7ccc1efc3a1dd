"""One flywheel cycle per partition: a reviewer-feedback batch, or a bootstrap cycle."""

from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

cycles = dg.DynamicPartitionsDefinition(name="flywheel_cycle")


class NotOlderThanMaterialized(dg.AutomationCondition):
    """True for the cycle partitions not older (in the order cycles were added) than the newest
    partition of this asset already materialized: a backfill of an old cycle's upstream assets
    does not request this asset for that cycle. Needs the automation sensor to evaluate on the
    user code server (`use_user_code_server=True`)."""

    @property
    def name(self) -> str:
        return "not_older_than_newest_materialized_cycle"

    @property
    def description(self) -> str:
        return "Cycle is not older than the newest cycle this asset was materialized for"

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        if context.candidate_subset.is_empty or context.partitions_def is None:
            return dg.AutomationResult(context=context, true_subset=context.candidate_subset)
        view = context.asset_graph_view
        store = view.partition_loading_context.dynamic_partitions_store
        keys = list(context.partitions_def.get_partition_keys(dynamic_partitions_store=store))
        done = await view.compute_materialized_asset_subset(context.key)
        position = {key: i for i, key in enumerate(keys)}
        done_at = [position[k] for k in done.expensively_compute_partition_keys() if k in position]
        newest = max(done_at, default=0)
        allowed = context.candidate_subset.compute_intersection_with_partition_keys(
            set(keys[newest:])
        )
        return dg.AutomationResult(context=context, true_subset=allowed)


def not_older_than_materialized() -> dg.AutomationCondition:
    return NotOlderThanMaterialized()


def cycle_asset(version: str, deps: Sequence[Any], **kwargs: Any) -> Callable:
    """A per-cycle asset downstream of the feedback batch: partitioned by cycle, in the
    `flywheel` group, materialized by itself once its upstream partition is updated."""
    kwargs.setdefault("automation_condition", dg.AutomationCondition.eager())
    return dg.asset(
        partitions_def=cycles,
        group_name="flywheel",
        code_version=version,
        deps=deps,
        **kwargs,
    )
