"""Small markdown renderers for asset metadata."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import polars as pl


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def frame_table(frame: pl.DataFrame) -> str:
    return table(frame.columns, frame.iter_rows())


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")
