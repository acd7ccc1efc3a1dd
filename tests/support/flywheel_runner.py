"""Helpers for tests that run whole flywheel cycles in a temporary home."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from flywheel_assets.definitions import build_definitions
from flywheel_cli import runner


def run_cycles(
    home: Path,
    env: Mapping[str, str],
    keys: list[str],
    overrides: list[str],
    instance: dg.DagsterInstance | None = None,
) -> tuple[dg.Definitions, dg.DagsterInstance]:
    """Build the seed corpus, then run the flywheel_cycle job for each partition key in turn."""
    defs = build_definitions(env=env, home=home, overrides=overrides)
    instance = instance or dg.DagsterInstance.ephemeral()
    runner.run_cycles(defs, instance, keys)
    return defs, instance


def latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    assert records, f"{asset}[{partition}] was never materialized"
    metadata = records[0].event_log_entry.asset_materialization.metadata
    return {k: getattr(v, "value", v) for k, v in metadata.items()}
