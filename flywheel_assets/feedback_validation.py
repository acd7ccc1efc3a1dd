"""Reviewer-feedback rows: each one is accepted or quarantined with a reason, never dropped."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from flywheel_assets.severity import SEVERITIES

REQUIRED = ("code", "review", "severity")


@dataclass
class ValidatedBatch:
    accepted: list[dict] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    received: int = 0


def content_sha256(code: str, review: str) -> str:
    return hashlib.sha256(f"{code}\n{review}".encode()).hexdigest()


def _check_row(row: object) -> tuple[dict | None, str | None]:
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    missing = [k for k in REQUIRED if not isinstance(row.get(k), str) or not row[k].strip()]
    if missing:
        return None, f"missing or empty field(s): {', '.join(missing)}"
    severity = row["severity"].strip().lower()
    if severity not in SEVERITIES:
        return None, f"unknown severity {row['severity']!r}; expected one of {SEVERITIES}"
    return {**row, "severity": severity}, None


def validate_jsonl(data: bytes) -> ValidatedBatch:
    """Validate a JSONL batch line by line (1-based line numbers; blank lines are not rows)."""
    batch = ValidatedBatch()
    for line_no, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        batch.received += 1
        text = raw.decode("utf-8", errors="replace")
        try:
            row, reason = _check_row(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            row, reason = None, f"not valid JSON: {exc}"
        if row is None:
            batch.quarantined.append({"line_no": line_no, "raw": text[:4000], "reason": reason})
        else:
            row["line_no"] = line_no
            row["content_sha256"] = content_sha256(row["code"], row["review"])
            batch.accepted.append(row)
    return batch
