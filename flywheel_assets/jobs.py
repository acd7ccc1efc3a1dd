"""Jobs: one turn of the flywheel per cycle partition, and the seed corpus."""

import dagster as dg

from flywheel_assets.assets import CYCLE_ASSETS
from flywheel_assets.assets.step00_seed_corpus import seed_corpus
from flywheel_assets.partitions import cycles

flywheel_cycle_job = dg.define_asset_job(
    "flywheel_cycle",
    selection=dg.AssetSelection.assets(*CYCLE_ASSETS),
    partitions_def=cycles,
    description="One turn of the flywheel: exam, answers, grading, curriculum, fine-tune, deploy.",
)
seed_corpus_job = dg.define_asset_job("seed_corpus_job", selection=[seed_corpus])
