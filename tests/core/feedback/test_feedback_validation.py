"""Protects reviewer-feedback intake: every row is accepted or quarantined with a reason."""

from __future__ import annotations

import json

from flywheel_core.feedback.validation import validate_jsonl


def test_conservation_and_reasons():
    lines = [
        json.dumps({"code": "x = 1", "review": "unused", "severity": "Trivial"}),
        "{not json",
        json.dumps({"code": "x", "severity": "major"}),
        json.dumps({"code": "x", "review": "r", "severity": "blocker"}),
        "",
        json.dumps(["a", "list"]),
    ]
    batch = validate_jsonl("\n".join(lines).encode())
    assert batch.received == 5
    assert len(batch.accepted) + len(batch.quarantined) == batch.received
    assert batch.accepted[0]["severity"] == "trivial"
    reasons = {q["line_no"]: q["reason"] for q in batch.quarantined}
    assert "not valid JSON" in reasons[2]
    assert "review" in reasons[3]
    assert "unknown severity 'blocker'" in reasons[4]
    assert "JSON object" in reasons[6]
