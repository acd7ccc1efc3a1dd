"""Feedback batches: which landed files count, and a safe partition key for each."""

from __future__ import annotations

import re

SUFFIXES = (".jsonl", ".csv")
MAX_STEM = 40
HASH_CHARS = 12


def is_feedback_file(name: str) -> bool:
    """A name with a feedback suffix; a hidden one is listed too, so its skip can say why."""
    return name.rsplit("/", 1)[-1].lower().endswith(SUFFIXES)


def skip_reason(name: str) -> str | None:
    """Why a feedback-named file is not landed (None: it is), e.g. `..x..jsonl` or an upload
    tool's hidden temporary file."""
    if name.rsplit("/", 1)[-1].startswith("."):
        return "hidden file (its name starts with '.'): rename it without the dot to land it"
    return None


def batch_key(name: str, sha256: str) -> str:
    """`<safe stem>-<content hash prefix>`: only [a-z0-9-_.], at most 53 characters."""
    stem = name.rsplit("/", 1)[-1].lower()
    for suffix in SUFFIXES:
        stem = stem.removesuffix(suffix)
    stem = re.sub(r"[^a-z0-9_.-]+", "-", stem)
    stem = re.sub(r"\.{2,}", ".", stem).strip("-._")[:MAX_STEM].strip("-._")
    return f"{stem or 'batch'}-{sha256[:HASH_CHARS]}"
