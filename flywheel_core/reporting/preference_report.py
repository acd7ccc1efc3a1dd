"""Markdown for the explanation judge: the preference table and a few example explanations."""

from __future__ import annotations

import polars as pl

from flywheel_core.reporting.markdown import table
from flywheel_core.teaching.preference import Preference

EXAMPLE_CHARS = 400


def preference_table(prefs: dict[str, Preference]) -> str:
    rows = [
        (
            f"new adapter vs {name}",
            p.wins,
            p.ties,
            p.losses,
            f"{p.differential:+.2f}",
            f"[{p.ci_low:+.2f}, {p.ci_high:+.2f}]",
        )
        for name, p in prefs.items()
    ]
    return table(["comparison", "wins", "ties", "losses", "differential", "95% CI"], rows)


def _clip(text: str) -> str:
    flat = " ".join((text or "").split()).replace("|", "/")
    return flat if len(flat) <= EXAMPLE_CHARS else flat[: EXAMPLE_CHARS - 3] + "..."


def examples_markdown(
    sample: pl.DataFrame,
    texts: dict[str, dict[str, str]],
    verdicts: dict[str, dict[str, str | None]],
    count: int,
) -> str:
    """A few items: the finding, each model's explanation and the judge's verdicts."""
    blocks = []
    for row in sample.head(count).iter_rows(named=True):
        lines = [
            f"**{row['item_id']}** ({row['severity']}): {_clip(row['review'])}",
            "",
            "| model | explanation |",
            "|---|---|",
        ]
        lines += [f"| {name} | {_clip(t[row['item_id']])} |" for name, t in texts.items()]
        said = ", ".join(
            f"vs {b}: {v.get(row['item_id']) or 'no verdict'}" for b, v in verdicts.items()
        )
        blocks.append("\n".join([*lines, "", f"judge: {said}"]))
    return "\n\n".join(blocks)
