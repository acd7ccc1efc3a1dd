"""The reviewer-feedback record: one JSONL line or one CSV row (same column names)."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ConfigDict, Field

from flywheel_core.severity import SEVERITIES

REQUIRED = ("code", "review", "severity")
OPTIONAL = ("explanation", "id", "author", "timestamp")

# Words reviewers use for a severity, mapped to the severities they most likely mean.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "blocker": ("critical",),
    "security": ("critical",),
    "severe": ("critical",),
    "fatal": ("critical",),
    "urgent": ("critical",),
    "high": ("major", "critical"),
    "bug": ("major",),
    "important": ("major",),
    "medium": ("minor", "major"),
    "moderate": ("minor", "major"),
    "normal": ("minor",),
    "low": ("minor", "trivial"),
    "nit": ("trivial",),
    "nitpick": ("trivial",),
    "style": ("trivial",),
    "cosmetic": ("trivial",),
    "typo": ("trivial",),
    "info": ("trivial",),
}


class FeedbackRecord(BaseModel):
    """A reviewer's verdict on one review comment; `severity` is case-insensitive."""

    model_config = ConfigDict(extra="ignore", strict=True)

    code: str = Field(min_length=1, description="the code snippet the comment is about")
    review: str = Field(min_length=1, description="the review comment")
    severity: str = Field(description="critical | major | minor | trivial (any case)")
    explanation: str | None = Field(None, description="why the reviewer chose this severity")
    id: str | int | None = Field(None, description="the row's id in the reviewer's tool")
    author: str | None = Field(None, description="who wrote the verdict")
    timestamp: str | None = Field(None, description="when, ISO 8601")


def normalize_severity(value: str) -> str | None:
    """The canonical severity, or None when the value is not one (surrounding blanks ignored)."""
    severity = value.strip().lower()
    return severity if severity in SEVERITIES else None


def suggest_severity(value: str) -> list[str]:
    """Severities a near miss probably meant: synonyms, prefixes and typos."""
    word = value.strip().lower()
    if word in SYNONYMS:
        return list(SYNONYMS[word])
    if len(word) >= 3:
        prefixed = [s for s in SEVERITIES if s.startswith(word)]
        if prefixed:
            return prefixed
    return difflib.get_close_matches(word, SEVERITIES, n=2, cutoff=0.6)
