"""Turn a teacher reply into accepted items: pool references, new items, or quarantine.

A reply item that names a data-source `item_id` becomes that data-source item as stored (its
code, review and answer key come from the data, not from the model's copy of them). An item
without a known id is a new item only if it has code, review and a valid severity; its id is a
content hash, so a model cannot claim an id it was not shown. Duplicates, excluded items and items
beyond the number requested are quarantined with the reason.

Where the rules name an explanation source (new training examples), the model's reference
explanation is carried onto the item under that source; a reviewer's own explanation is kept
instead. A missing explanation never costs the item (it still teaches the severity) and an
overlong one is cut: both are counted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from flywheel_core.domain import Item, QuarantinedOutput
from flywheel_core.teacher.output import Parsed, TeacherItem, validate_items


@dataclass
class Accepted:
    items: list[Item] = field(default_factory=list)
    quarantine: list[QuarantinedOutput] = field(default_factory=list)
    label_overrides: int = 0  # pool references whose severity the model got wrong
    explanations_missing: int = 0  # examples the teacher gave no explanation for
    explanations_truncated: int = 0  # explanations cut to MAX_EXPLANATION_CHARS


@dataclass(frozen=True)
class Rules:
    pool: Mapping[str, Item]
    excluded: frozenset[str] = frozenset()
    source: str = "teacher"
    explanation_source: str | None = None  # None: explanations are not asked for (exams)


MAX_EXPLANATION_CHARS = 1200
REVIEWER = "reviewer"


def new_item_id(code: str, review: str) -> str:
    return "teacher:" + hashlib.sha256(f"{code}\n{review}".encode()).hexdigest()[:16]


def accept(
    parsed: Parsed,
    list_key: str,
    limit: int,
    rules: Rules,
    used: set[str],
    call_key: str,
    into: Accepted,
) -> None:
    """Add the valid items of one reply to `into` (at most `limit`); quarantine the rest."""
    for q in parsed.quarantined:
        into.quarantine.append(QuarantinedOutput(call_key=call_key, **q.__dict__))
    if parsed.document is None:
        return
    kept, bad = validate_items(parsed.document.get(list_key, None))
    for q in bad:
        into.quarantine.append(QuarantinedOutput(call_key=call_key, **q.__dict__))
    taken = 0
    for index, raw in kept:
        item, reason = _resolve(raw, rules, used)
        if item is not None and taken >= limit:
            item, reason = None, f"beyond the {limit} items requested"
        if item is None:
            text = json.dumps(raw.model_dump(exclude_none=True))
            into.quarantine.append(
                QuarantinedOutput(call_key=call_key, item_index=index, raw=text, reason=reason)
            )
            continue
        taken += 1
        used.add(item.item_id)
        into.label_overrides += int(raw.item_id in rules.pool and raw.severity != item.severity)
        into.items.append(_with_explanation(item, raw.explanation, rules, into))


def _with_explanation(item: Item, text: str | None, rules: Rules, into: Accepted) -> Item:
    """The item with the teacher's explanation, unless a reviewer already explained it."""
    if rules.explanation_source is None or item.explanation_source == REVIEWER:
        return item
    if text is None:
        into.explanations_missing += 1
        return item
    if len(text) > MAX_EXPLANATION_CHARS:
        into.explanations_truncated += 1
        text = _cut(text, MAX_EXPLANATION_CHARS)
    return item.model_copy(
        update={"explanation": text, "explanation_source": rules.explanation_source}
    )


def _cut(text: str, limit: int) -> str:
    """At most `limit` characters, ending at the last full sentence when one ends past half."""
    head = text[:limit]
    end = max(head.rfind(". "), head.rfind(".\n"))
    return head[: end + 1] if end >= limit // 2 else head.rstrip()


def _resolve(raw: TeacherItem, rules: Rules, used: set[str]) -> tuple[Item | None, str]:
    if raw.item_id and raw.item_id in rules.pool:
        item = rules.pool[raw.item_id]
    elif raw.code and raw.review:
        code, review = raw.code, raw.review
        item = Item(
            item_id=new_item_id(code, review),
            source=rules.source,
            code=code,
            review=review,
            severity=raw.severity,
        )
    elif raw.item_id:
        return None, f"item_id {raw.item_id!r} is not in the data source (and no code/review)"
    else:
        return None, "a new item needs code and review"
    if item.item_id in rules.excluded:
        return None, f"item {item.item_id!r} is excluded (curriculum, this exam or held-out)"
    if item.item_id in used:
        return None, f"item {item.item_id!r} was already used"
    return item, ""
