"""Jobs: one turn of the flywheel per cycle partition, and the seed corpus.

Every cycle run carries the tag `flywheel/wheel=<flywheel home>`; the shipped instance config
(`flywheel_cli/dagster.yaml`) limits runs with one value of that tag to one at a time, so a
flywheel turns one cycle at a time (a job backfill of several cycles queues them, oldest first).
"""

import dagster as dg

from flywheel_assets.assets import CYCLE_ASSETS
from flywheel_assets.assets.step00_seed_corpus import seed_corpus

WHEEL_TAG = "flywheel/wheel"
CYCLE_JOB = "flywheel_cycle"


def cycle_job(wheel: str, executor: dg.ExecutorDefinition = dg.in_process_executor):
    """The cycle job of the flywheel at `wheel` (its home), steps in one process by default."""
    return dg.define_asset_job(
        CYCLE_JOB,
        selection=dg.AssetSelection.assets(*CYCLE_ASSETS),
        description="One turn of the flywheel for one cycle partition: reviewer feedback, exam, "
        "answers, grading, curriculum, fine-tune, held-out evaluation and gate, explanation "
        "preference, deploy. Runs in one process (the fine-tune is a Pipes subprocess).",
        tags={WHEEL_TAG: wheel, "flywheel/run": "cycle"},
        executor_def=executor,
    )


seed_corpus_job = dg.define_asset_job(
    "seed_corpus_job",
    selection=[seed_corpus],
    description="The seed corpus (pylint's documented examples): built once, cached.",
)
