"""Where reviewer-feedback batches arrive (a local directory in the embedded default)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

SUFFIXES = (".jsonl",)


class FeedbackLanding(dg.ConfigurableResource):
    """A landing directory; the batch of cycle `k` is the file `<k>.jsonl`."""

    directory: str

    def batch_path(self, cycle: str) -> Path | None:
        for suffix in SUFFIXES:
            path = Path(self.directory) / f"{cycle}{suffix}"
            if path.is_file():
                return path
        return None
