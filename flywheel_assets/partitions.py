"""One flywheel cycle per partition: a reviewer-feedback batch, or a bootstrap cycle."""

from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

cycles = dg.DynamicPartitionsDefinition(name="flywheel_cycle")


def cycle_asset(version: str, deps: Sequence[Any], **kwargs: Any) -> Callable:
    """A per-cycle asset downstream of the feedback batch: partitioned by cycle, in the
    `flywheel` group, materialized by itself once its upstream partition is updated."""
    return dg.asset(
        partitions_def=cycles,
        group_name="flywheel",
        code_version=version,
        deps=deps,
        automation_condition=dg.AutomationCondition.eager(),
        **kwargs,
    )
