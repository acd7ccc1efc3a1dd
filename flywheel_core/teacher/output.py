"""Parse a teacher's reply without ever raising: last JSON document, repaired, item by item.

The teacher may think before answering, wrap JSON in code fences, leave trailing commas, use
single quotes or stop mid-list (max tokens). `parse_document` returns the last JSON document it
can read (repaired where needed) and what it had to do; `validate_items` keeps every item that
passes its pydantic schema and quarantines the rest with the raw text and the reason.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError, field_validator

from flywheel_core.severity import SEVERITIES

_FENCE = re.compile(r"^[ \t]*```[\w-]*[ \t]*$", re.MULTILINE)
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?)|out of\s*(\d+))?\s*$", re.I)
MAX_RAW = 2000


@dataclass
class Quarantined:
    item_index: int  # position in the teacher's list; -1 for a field of the document itself
    raw: str
    reason: str


@dataclass
class Parsed:
    document: dict | None
    repairs: list[str] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)


# -- severities and proficiency -------------------------------------------------------------------
def normalize_severity(value: object) -> str:
    """One of the four severities, case- and whitespace-insensitive; anything else is an error."""
    text = str(value).strip().strip("\"'").lower()
    if text not in SEVERITIES:
        raise ValueError(f"severity {value!r} is not one of {', '.join(SEVERITIES)}")
    return text


def parse_proficiency(value: object) -> int:
    """An integer 1-10 from 8, 7.5, "7.5", "8/10", "4 out of 5" or "10".

    Fractions round half up (7.5 -> 8, 6.49 -> 6), not to even; "a/b" is scaled to ten. The whole
    string must be the number: "10" is ten, never the first digit of it.
    """
    if isinstance(value, bool):
        raise ValueError(f"proficiency {value!r} is not a number")
    if isinstance(value, int | float):
        number = float(value)
    else:
        match = _NUMBER.match(str(value))
        if not match:
            raise ValueError(f"proficiency {value!r} is not a number from 1 to 10")
        number = float(match.group(1))
        scale = match.group(2) or match.group(3)
        if scale is not None:
            if float(scale) <= 0:
                raise ValueError(f"proficiency {value!r} has a zero scale")
            number = number * 10.0 / float(scale)
    if not math.isfinite(number):
        raise ValueError(f"proficiency {value!r} is not finite")
    rounded = math.floor(number + 0.5)
    if not 1 <= rounded <= 10:
        raise ValueError(f"proficiency {value!r} is outside 1-10")
    return rounded


class TeacherItem(BaseModel):
    """An item as the teacher returns it: a pool reference (item_id) or a new item (all fields)."""

    item_id: str | None = None
    code: str | None = None
    review: str | None = None
    severity: str
    # Reference explanation of a new training example. Never a reason to drop the item: anything
    # but non-blank text reads as None and the item still serves the severity task.
    explanation: str | None = None

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, value: object) -> str:
        return normalize_severity(value)

    @field_validator("explanation", mode="before")
    @classmethod
    def _explanation(cls, value: object) -> str | None:
        return (value.strip() or None) if isinstance(value, str) else None

    @field_validator("item_id", "code", "review", mode="before")
    @classmethod
    def _text(cls, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str | int):
            raise ValueError(f"expected text, got {type(value).__name__}")
        text = str(value).strip()
        return text or None


# -- finding and repairing JSON -------------------------------------------------------------------
def _decode_all(text: str) -> list[tuple[int, int, Any]]:
    """Every top-level JSON object/array that decodes as is: (start, end, value)."""
    decoder = json.JSONDecoder()
    found, i = [], 0
    while i < len(text):
        if text[i] in "{[":
            try:
                value, end = decoder.raw_decode(text, i)
            except ValueError:
                i += 1
                continue
            found.append((i, end, value))
            i = end
        else:
            i += 1
    return found


def _normalize(text: str) -> tuple[str, list[int], list[str]]:
    """Single-quoted strings -> double-quoted, trailing commas dropped.

    Returns the text, the positions right after each closed container (cut points for a
    truncated reply), and the closers still open at the end (innermost last).
    """
    out: list[str] = []
    cuts: list[int] = []
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
                out.append(ch)
            elif ch == "\\":
                escaped = True
                out.append(ch)
            elif ch == quote:
                quote = None
                out.append('"')
            elif ch == '"' and quote == "'":
                out.append('\\"')
            elif ch == "\n":
                out.append("\\n")
            else:
                out.append(ch)
            continue
        if ch in "\"'":
            quote = ch
            out.append('"')
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
            out.append(ch)
        elif ch in "}]":
            while out and out[-1].isspace():
                out.pop()
            if out and out[-1] == ",":
                out.pop()
            if stack:
                stack.pop()
            out.append(ch)
            cuts.append(len(out))
        else:
            out.append(ch)
    if quote:
        out.append('"')
    return "".join(out), cuts, stack


def _closers_at(text: str) -> str:
    _, _, stack = _normalize(text)
    return "".join(reversed(stack))


def _repair(text: str) -> tuple[Any, str, str] | None:
    """A repaired document from the first opening bracket on: (value, what was done, dropped)."""
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    fixed, cuts, stack = _normalize(text[start:])
    # Cut after the last complete element first (a half-written item is not an item); close
    # everything as it stands only when no cut gives a document.
    attempts = []
    for cut in reversed(cuts[-50:]):
        head = fixed[:cut].rstrip().rstrip(",")
        attempts.append((head + _closers_at(head), fixed[cut:]))
    attempts.append((fixed + "".join(reversed(stack)), ""))
    for candidate, dropped in attempts:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict | list):
            done = "closed truncated JSON" if stack or dropped else "repaired quotes/commas"
            return value, done, dropped.strip()
    return None


def parse_document(text: str | None, list_key: str) -> Parsed:
    """The last JSON document in `text` (a bare list becomes {list_key: list}); never raises."""
    if not text or not text.strip():
        return Parsed(None, quarantined=[Quarantined(-1, "", "empty reply")])
    repairs: list[str] = []
    unfenced = _FENCE.sub("", text)
    if unfenced != text:
        repairs.append("removed code fences")
    documents = [v for _, _, v in _decode_all(unfenced) if isinstance(v, dict | list)]
    value = _last_useful(documents, list_key)
    quarantined: list[Quarantined] = []
    if value is None:
        repaired = _repair(unfenced)
        if repaired is None:
            if not documents:
                reason = "no JSON document found in the reply"
                return Parsed(None, repairs, [Quarantined(-1, text[:MAX_RAW], reason)])
            value = documents[-1]
        else:
            value, done, dropped = repaired
            repairs.append(done)
            if dropped:
                reason = "truncated reply: incomplete trailing item dropped"
                quarantined.append(Quarantined(-1, dropped[:MAX_RAW], reason))
    if isinstance(value, list):
        value = {list_key: value}
    return Parsed(value, repairs, quarantined)


def _last_useful(documents: list[Any], list_key: str) -> Any:
    """The last complete document holding the expected list, or a bare list; else None."""
    for value in reversed(documents):
        if isinstance(value, list) or (isinstance(value, dict) and list_key in value):
            return value
    return None


def validate_items(
    raw_items: object, schema: type[BaseModel] = TeacherItem
) -> tuple[list[tuple[int, BaseModel]], list[Quarantined]]:
    """(index, item) for every valid item; every invalid one quarantined with its reason."""
    if not isinstance(raw_items, list):
        raw = json.dumps(raw_items, default=str)[:MAX_RAW]
        reason = f"expected a list of items, got {type(raw_items).__name__}"
        return [], [Quarantined(-1, raw, reason)]
    kept, quarantined = [], []
    for index, raw in enumerate(raw_items):
        try:
            kept.append((index, schema.model_validate(raw)))
        except ValidationError as exc:
            reason = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'item'}: {e['msg']}" for e in exc.errors()
            )
            quarantined.append(Quarantined(index, json.dumps(raw, default=str)[:MAX_RAW], reason))
    return kept, quarantined
