"""The flywheel on Dagster: assets, checks, sensors, jobs and the only Definitions.

The Dagster features in preview or beta that the flywheel uses on purpose are listed here, once,
and their warnings silenced in every process that loads the code (the webserver's code server,
the daemon's, each run worker): partitioned asset checks (`better_than_deployed` and
`rows_conserved` judge one cycle) and the automation sensor evaluated on the code server
(`deployed_student`'s condition is Python), and Dagster Pipes, whose own message reader uses a
preview API when `lora_adapter` launches the fine-tune. Any other Dagster warning still shows.

`external/` runs in fine-tune environments that hold dagster-pipes but not Dagster (the NeMo
venv, a GPU container): there this package has nothing to silence.
"""

import warnings

try:
    from dagster import BetaWarning, PreviewWarning
except ImportError:  # an external/ entry point in a venv without Dagster
    CHOSEN_ON_PURPOSE = []
else:
    CHOSEN_ON_PURPOSE = [
        (PreviewWarning, r"Specifying a partitions_def on an AssetCheckSpec"),
        (BetaWarning, r"Parameter `use_user_code_server` of initializer"),
        (PreviewWarning, r"Function `PipesMessageReader.expected_writer_count`"),
    ]

for category, message in CHOSEN_ON_PURPOSE:
    warnings.filterwarnings("ignore", message=message, category=category)
