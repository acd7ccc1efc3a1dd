"""Protects teacher-output parsing: it never raises; every item is kept valid or quarantined."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel_core.severity import SEVERITIES
from flywheel_core.teacher.output import (
    normalize_severity,
    parse_document,
    parse_proficiency,
    validate_items,
)

GOOD = {"questions": [{"item_id": "a", "severity": "major"}, {"item_id": "b", "severity": "Minor"}]}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(GOOD),
        "Thinking about {the student}... final answer:\n" + json.dumps(GOOD),
        "```json\n" + json.dumps(GOOD, indent=2) + "\n```",
        json.dumps(GOOD).replace('"', "'"),
        '{"questions": [{"item_id": "a", "severity": "major",}, '
        '{"item_id": "b", "severity": "Minor"},],}',
        json.dumps(GOOD["questions"]),
    ],
    ids=["plain", "after-prose", "fenced", "single-quotes", "trailing-commas", "bare-list"],
)
def test_damaged_but_complete_replies_give_both_items(text):
    parsed = parse_document(text, "questions")
    kept, bad = validate_items(parsed.document["questions"])
    assert [item.severity for _, item in kept] == ["major", "minor"]
    assert not bad and not parsed.quarantined


def test_the_last_document_wins():
    text = 'Example: {"questions": [{"item_id": "x", "severity": "trivial"}]}\n' + json.dumps(GOOD)
    assert parse_document(text, "questions").document == GOOD


def test_truncated_reply_keeps_complete_items_and_quarantines_the_tail():
    text = json.dumps(GOOD)[:-12]
    parsed = parse_document(text, "questions")
    assert parsed.document == {"questions": [GOOD["questions"][0]]}
    assert "truncated" in parsed.quarantined[0].reason


def test_invalid_items_are_quarantined_with_the_reason():
    kept, bad = validate_items([{"item_id": "a", "severity": "blocker"}, {"item_id": "b"}, 3])
    assert not kept
    assert [q.item_index for q in bad] == [0, 1, 2]
    assert "blocker" in bad[0].reason and "severity" in bad[1].reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (8, 8),
        ("10", 10),
        (10, 10),
        ("7.5", 8),
        (7.5, 8),
        (6.49, 6),
        ("8/10", 8),
        ("4 out of 5", 8),
        (" 9 ", 9),
        (1, 1),
    ],
)
def test_proficiency_reads_ten_as_ten_and_rounds_half_up(raw, expected):
    assert parse_proficiency(raw) == expected


@pytest.mark.parametrize("raw", [0, "11", "ten", None, True, "8/0", "7 or 8", float("nan")])
def test_bad_proficiency_is_an_error_not_a_guess(raw):
    with pytest.raises(ValueError):
        parse_proficiency(raw)


def test_severity_is_one_of_four_case_insensitive():
    assert normalize_severity(" CRITICAL ") == "critical"
    with pytest.raises(ValueError):
        normalize_severity("severe")


items = st.lists(
    st.fixed_dictionaries(
        {
            "item_id": st.text(min_size=1, max_size=8),
            "severity": st.sampled_from([*SEVERITIES, "Major", "blocker", "", "7"]),
            "code": st.text(max_size=30),
        }
    ),
    max_size=6,
)


@st.composite
def damaged_replies(draw):
    text = json.dumps({"questions": draw(items)})
    if draw(st.booleans()):
        text = "Let me think {first}.\n```json\n" + text + "\n```"
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["cut", "drop", "insert", "quote"]))
        pos = draw(st.integers(0, max(len(text) - 1, 0)))
        if op == "cut":
            text = text[:pos]
        elif op == "drop":
            text = text[:pos] + text[pos + 1 :]
        elif op == "insert":
            text = text[:pos] + draw(st.sampled_from(list("{}[],:'\"x\\"))) + text[pos:]
        else:
            text = text.replace('"', "'", 1)
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_replies())
def test_parsing_never_raises_and_accounts_for_every_item(text):
    parsed = parse_document(text, "questions")
    if parsed.document is None:
        assert parsed.quarantined
        return
    raw_items = parsed.document.get("questions")
    kept, bad = validate_items(raw_items)
    assert all(item.severity in SEVERITIES for _, item in kept)
    if isinstance(raw_items, list):
        indices = sorted([i for i, _ in kept] + [q.item_index for q in bad])
        assert indices == list(range(len(raw_items)))
    else:
        assert bad and not kept
