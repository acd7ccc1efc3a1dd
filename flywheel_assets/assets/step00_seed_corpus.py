"""seed_corpus: pylint's documented message examples, with a fixed held-out split."""

from pathlib import Path

import dagster as dg

from flywheel_core.data.pylint_corpus import (
    PYLINT_SDIST_SHA256,
    PYLINT_VERSION,
    load_or_build_seed_corpus,
)
from flywheel_core.reporting.markdown import frame_table
from resources.config import FlywheelConfig
from resources.lineage.store import LineageStore


@dg.asset(group_name="corpus", code_version=f"pylint-{PYLINT_VERSION}-1")
def seed_corpus(
    context: dg.AssetExecutionContext, store: LineageStore, flywheel_config: FlywheelConfig
) -> dg.MaterializeResult:
    """Labelled (code, review, severity) items built from the pinned pylint sdist."""
    frame = load_or_build_seed_corpus(Path(flywheel_config.cache_dir))
    store.replace_rows("seed_corpus", frame)
    counts = frame.group_by("severity", "split").len().sort("severity", "split")
    context.log.info(f"seed corpus: {frame.height} items")
    pivot = counts.pivot(on="split", index="severity", values="len").sort("severity")
    return dg.MaterializeResult(
        metadata={
            "items": frame.height,
            "heldout_items": int((frame["split"] == "heldout").sum()),
            "pylint_version": PYLINT_VERSION,
            "sdist_sha256": PYLINT_SDIST_SHA256,
            "per_severity": dg.MetadataValue.md(frame_table(pivot)),
        }
    )
