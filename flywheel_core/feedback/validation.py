"""Reviewer-feedback rows: each one is accepted or quarantined with a reason, never dropped."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pydantic import ValidationError

from flywheel_core.feedback.schema import (
    REQUIRED,
    FeedbackRecord,
    normalize_severity,
    suggest_severity,
)
from flywheel_core.severity import SEVERITIES

BOM = b"\xef\xbb\xbf"
RAW_LIMIT = 4000  # characters of a rejected row kept in the quarantine table
DEFAULT_MAX_CODE_BYTES = 64 * 1024


@dataclass
class ValidatedBatch:
    accepted: list[dict] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    received: int = 0

    def quarantine(self, line_no: int, raw: str, reason: str) -> None:
        self.quarantined.append({"line_no": line_no, "raw": raw[:RAW_LIMIT], "reason": reason})


@dataclass
class Rules:
    max_code_bytes: int = DEFAULT_MAX_CODE_BYTES
    known_hashes: frozenset[str] = frozenset()  # content hashes accepted in earlier batches


def content_sha256(code: str, review: str) -> str:
    return hashlib.sha256(f"{code}\n{review}".encode()).hexdigest()


def _type_errors(exc: ValidationError) -> str:
    parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg'].lower()}" for e in exc.errors()]
    return "wrong type or value: " + "; ".join(parts)


def _severity_reason(value: str) -> str:
    reason = f"unknown severity {value!r}; expected one of {', '.join(SEVERITIES)}"
    suggestions = suggest_severity(value)
    if suggestions:
        reason += f" (did you mean {' or '.join(repr(s) for s in suggestions)}?)"
    return reason


def check_row(row: object, rules: Rules) -> tuple[dict | None, str | None]:
    """The normalized row, or the reason it is rejected (duplicates are checked by the caller)."""
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    missing = [k for k in REQUIRED if row.get(k) is None or row.get(k) == ""]
    if missing:
        return None, f"missing or empty field(s): {', '.join(missing)}"
    try:
        record = FeedbackRecord.model_validate(row)
    except ValidationError as exc:
        return None, _type_errors(exc)
    severity = normalize_severity(record.severity)
    if severity is None:
        return None, _severity_reason(record.severity)
    size = len(record.code.encode())
    if size > rules.max_code_bytes:
        return None, f"code snippet is {size} bytes, over the limit of {rules.max_code_bytes}"
    clean = record.model_dump()
    clean["severity"] = severity
    clean["id"] = None if record.id is None else str(record.id)
    return clean, None


def _jsonl_rows(data: bytes) -> Iterator[tuple[int, str, object | None, str | None]]:
    """(line_no, raw text, parsed object or None, error) per non-blank line (LF or CRLF)."""
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removeprefix(BOM).rstrip(b"\r")
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            shown = raw.decode("utf-8", errors="replace")
            yield line_no, shown, None, f"not valid UTF-8 at byte {exc.start}"
            continue
        try:
            yield line_no, text, json.loads(text), None
        except json.JSONDecodeError as exc:
            reason = f"not valid JSON (truncated line?): {exc.msg} at column {exc.colno}"
            yield line_no, text, None, reason


def _has_surrogates(values: Iterable[object]) -> bool:
    return any(isinstance(v, str) and any("\udc80" <= ch <= "\udcff" for ch in v) for v in values)


def _csv_rows(data: bytes) -> Iterator[tuple[int, str, object | None, str | None]]:
    """Rows of a CSV export with a header; quoted fields may span lines."""
    text = data.removeprefix(BOM).decode("utf-8", errors="surrogateescape")
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # oversize is our call
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        reader.fieldnames  # noqa: B018 - reads the header row
        start = reader.line_num + 1
        for row in reader:
            line_no, start = start, reader.line_num + 1
            raw = json.dumps(row, ensure_ascii=False, default=str)
            raw = raw.encode("utf-8", errors="replace").decode("utf-8", errors="replace")
            if _has_surrogates(row.values()):
                yield line_no, raw, None, "not valid UTF-8"
            elif None in row:
                yield line_no, raw, None, f"{len(row[None])} more field(s) than the header"
            else:
                yield line_no, raw, {k: (v if v != "" else None) for k, v in row.items()}, None
    except csv.Error as exc:
        yield reader.line_num, "", None, f"unreadable CSV from this line on: {exc}"


def validate_batch(
    data: bytes, name: str = "batch.jsonl", rules: Rules | None = None
) -> ValidatedBatch:
    """Validate a JSONL or CSV batch (chosen by the file name) row by row."""
    rules = rules or Rules()
    rows = _csv_rows(data) if name.lower().endswith(".csv") else _jsonl_rows(data)
    batch = ValidatedBatch()
    seen: dict[str, int] = {}
    for line_no, raw, parsed, error in rows:
        batch.received += 1
        row, reason = (None, error) if error else check_row(parsed, rules)
        if row is not None:
            digest = content_sha256(row["code"], row["review"])
            if digest in rules.known_hashes:
                row, reason = None, "duplicate of a row accepted in an earlier batch"
            elif digest in seen:
                row, reason = None, f"duplicate of line {seen[digest]} (same code and review)"
            else:
                seen[digest] = line_no
                batch.accepted.append({**row, "line_no": line_no, "content_sha256": digest})
        if row is None:
            batch.quarantine(line_no, raw, reason or "rejected")
    return batch


def validate_jsonl(data: bytes, rules: Rules | None = None) -> ValidatedBatch:
    """Validate a JSONL batch line by line (1-based line numbers; blank lines are not rows)."""
    return validate_batch(data, "batch.jsonl", rules)
