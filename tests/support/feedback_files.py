"""Helpers for tests that drop reviewer-feedback files into a landing zone."""

from __future__ import annotations

import json
from pathlib import Path

ROWS = [
    ("eval(user_input)", "eval on user input runs arbitrary code", "critical"),
    ("total = price * qty + 1", "off-by-one: the total is wrong", "major"),
    ("for i in range(len(xs)): print(xs[i])", "iterate directly instead", "minor"),
    ("def f():\n    '''docstring'''", "docstring should end with a period", "trivial"),
]


def feedback_jsonl(tag: str, rows=ROWS) -> bytes:
    """A valid JSONL batch; `tag` makes its content (and so its cycle) unique."""
    lines = [
        json.dumps({"code": code, "review": f"{review} ({tag})", "severity": sev, "id": i})
        for i, (code, review, sev) in enumerate(rows, start=1)
    ]
    return ("\n".join(lines) + "\n").encode()


def drop(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
