"""Protects feedback intake against malformed files: nothing lost, every rejection explained."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel_core.feedback.schema import suggest_severity
from flywheel_core.feedback.validation import Rules, content_sha256, validate_batch


def row(code="x = 1", review="unused variable", severity="trivial", **extra) -> bytes:
    return json.dumps({"code": code, "review": review, "severity": severity, **extra}).encode()


def conserved(batch) -> bool:
    return len(batch.accepted) + len(batch.quarantined) == batch.received


def test_a_hostile_jsonl_file_keeps_every_row_with_a_reason():
    good = row()
    lines = [
        b"\xef\xbb\xbf" + row(code="a = 1"),  # 1: BOM on the first line
        row(code="b = 2", severity=" MAJOR ") + b"\r",  # 2: CRLF, odd case
        good[: len(good) // 2],  # 3: truncated line
        b"\x00\xff\xfe binary junk \x89PNG",  # 4: binary junk
        row(code="y" * (5 * 1024 * 1024)),  # 5: 5 MB snippet
        row(code=42),  # 6: wrong type
        row(severity="high"),  # 7: near miss
        row(code="c = 3"),  # 8: fine
        row(code="c = 3", severity="minor"),  # 9: duplicate of line 8
        row(review=None),  # 10: missing field
        b"[1, 2]",  # 11: not an object
        row(severity="crit"),  # 12: prefix
        row(severity="blocker"),  # 13: synonym
        row(code="d = 4", author=["list"]),  # 14: wrong optional type
        row(code="known"),  # 15: accepted in an earlier batch
        b"",  # blank: not a row
    ]
    data = b"\r\n".join(lines)
    rules = Rules(known_hashes=frozenset({content_sha256("known", "unused variable")}))
    batch = validate_batch(data, "hostile.jsonl", rules)
    assert batch.received == 15 and conserved(batch)
    assert [r["line_no"] for r in batch.accepted] == [1, 2, 8]
    assert batch.accepted[1]["severity"] == "major"
    reasons = {q["line_no"]: q["reason"] for q in batch.quarantined}
    assert "not valid JSON" in reasons[3]
    assert "UTF-8" in reasons[4] or "JSON" in reasons[4]
    assert "over the limit of 65536" in reasons[5]
    assert "code" in reasons[6] and "string" in reasons[6]
    assert "'major' or 'critical'" in reasons[7]
    assert "duplicate of line 8" in reasons[9]
    assert "missing or empty field(s): review" in reasons[10]
    assert "JSON object" in reasons[11]
    assert "did you mean 'critical'" in reasons[12]
    assert "did you mean 'critical'" in reasons[13]
    assert "author" in reasons[14]
    assert "earlier batch" in reasons[15]
    assert all(len(q["raw"]) <= 4000 for q in batch.quarantined)


def test_non_utf8_line_is_quarantined_not_decoded_wrongly():
    batch = validate_batch(row(code="caf\xe9").replace(b"\\u00e9", b"\xe9"), "latin1.jsonl")
    assert batch.quarantined[0]["reason"].startswith("not valid UTF-8")


def test_csv_export_with_bom_crlf_quoted_newlines_and_bad_rows():
    data = (
        "\ufeffcode,review,severity,author\r\n"
        '"def f():\r\n    return 1",missing docstring,Trivial,ann\r\n'
        "x = 1,unused,high,bob\r\n"
        "y = 2,,minor,\r\n"
        "z = 3,extra,minor,carl,surplus\r\n"
        "w = 4,fine,major,\r\n"
        f"{'v' * 200_000},huge,minor,\r\n"
    ).encode()
    batch = validate_batch(data, "export.CSV")
    assert batch.received == 6 and conserved(batch)
    assert [(r["line_no"], r["severity"]) for r in batch.accepted] == [(2, "trivial"), (7, "major")]
    assert batch.accepted[0]["code"] == "def f():\r\n    return 1"
    assert batch.accepted[1]["author"] is None
    reasons = {q["line_no"]: q["reason"] for q in batch.quarantined}
    assert "did you mean" in reasons[4]
    assert "review" in reasons[5]
    assert "more field(s) than the header" in reasons[6]
    assert "over the limit" in reasons[8]


def test_suggestions_for_near_misses():
    assert suggest_severity("High") == ["major", "critical"]
    assert suggest_severity("crit") == ["critical"]
    assert suggest_severity("mjaor")[0] == "major"
    assert suggest_severity("banana") == []


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(st.binary(max_size=80), st.builds(row, st.text(max_size=20))), max_size=30)
)
def test_conservation_law_holds_for_any_bytes(chunks):
    data = b"\n".join(chunks)
    for name in ("fuzz.jsonl", "fuzz.csv"):
        batch = validate_batch(data, name)
        assert conserved(batch)
        assert all(q["reason"] for q in batch.quarantined)
    rows = [line for line in data.split(b"\n") if line.removeprefix(b"\xef\xbb\xbf").strip()]
    assert validate_batch(data, "fuzz.jsonl").received == len(rows)
