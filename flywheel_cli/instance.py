"""The Dagster instance the flywheel runs against: `<home>/dagster` with the shipped config.

`python -m flywheel_cli.instance <dagster home>` writes `dagster.yaml` there (`make ui` does).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dagster as dg

SHIPPED = Path(__file__).with_name("dagster.yaml")


def write_instance_config(dagster_home: Path) -> Path:
    """`dagster.yaml` in `dagster_home`: the shipped config (pool limits, run queue, retries).

    An instance config someone edited by hand (it differs and is not empty) is left alone."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    current = target.read_text() if target.is_file() else ""
    if not current.strip() or current.startswith(SHIPPED.read_text().splitlines()[0]):
        target.write_text(SHIPPED.read_text())
    return target


def persistent_instance(home: Path) -> dg.DagsterInstance:
    """A Dagster instance under `<home>/dagster`, so `dagster dev` shows these runs later."""
    dagster_home = home / "dagster"
    write_instance_config(dagster_home)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dg.DagsterInstance.get()


if __name__ == "__main__":
    print(write_instance_config(Path(sys.argv[1]).resolve()))  # noqa: T201
