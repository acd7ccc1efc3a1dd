"""Reference explanations the offline corpus teacher builds from the data source's own text.

A pylint-derived item carries the rule's documentation (``details``, often empty) and the
documented fix (``good_code``, the rule's good example). The reference explanation states the
severity and what that severity means for the running code and for whom, adds the rule's
documented rationale when there is one, and names the fix as the lines that change between the
flagged and the fixed code. Nothing is invented: every clause comes from the severity scale or
from the corpus row. Items without a documented fix (reviewer feedback without an explanation)
get no reference and train the severity task only.
"""

from __future__ import annotations

import difflib
import re

SOURCE = "corpus-template/1"  # recorded as explanation_source: how the reference was made
MAX_FIX_CHARS = 140
MAX_DETAIL_CHARS = 220

RISK: dict[str, str] = {
    "critical": "when this code runs it can crash, exit abruptly or open a security hole",
    "major": "the code runs but can compute wrong results without any error",
    "minor": "the behaviour is surprising or fragile, though the system keeps working",
    "trivial": "it changes nothing at run time; only the readability of the code suffers",
}
AFFECTED: dict[str, str] = {
    "critical": "every user of the service and whoever operates it",
    "major": "callers who rely on the result",
    "minor": "maintainers and callers who hit the edge case",
    "trivial": "the people who read and maintain this code",
}

_RST_MARKUP = re.compile(r"``|`|:[a-z]+:|\*\*")


def _first_sentence(text: str) -> str:
    flat = " ".join(_RST_MARKUP.sub("", text).split())
    sentence = re.split(r"(?<=[.!?])\s", flat, maxsplit=1)[0]
    return sentence[:MAX_DETAIL_CHARS].rstrip()


def _short(lines: list[str]) -> str:
    joined = "; ".join(line.strip() for line in lines if line.strip())
    return joined if len(joined) <= MAX_FIX_CHARS else joined[: MAX_FIX_CHARS - 3] + "..."


def describe_fix(code: str, good_code: str) -> str | None:
    """The fix as the changed lines: "write `new` instead of `old`", "remove `old`", "add `new`"."""
    diff = list(difflib.ndiff(code.splitlines(), good_code.splitlines()))
    removed = [d[2:] for d in diff if d.startswith("- ")]
    added = [d[2:] for d in diff if d.startswith("+ ")]
    old, new = _short(removed[:2]), _short(added[:2])
    if new and old:
        return f"write `{new}` instead of `{old}`"
    if new:
        return f"add `{new}`"
    if old:
        return f"remove `{old}`"
    return None


def corpus_reference(
    severity: str, code: str, good_code: str | None, details: str | None
) -> str | None:
    """A reference explanation from the corpus row's own text, or None without a known fix."""
    if not good_code:
        return None
    fix = describe_fix(code, good_code)
    if fix is None:
        return None
    parts = [f"{severity.capitalize()}: {RISK[severity]}, which affects {AFFECTED[severity]}."]
    if details and (detail := _first_sentence(details)):
        parts.append(f"Background: {detail.rstrip('.')}.")
    parts.append(f"Fix: {fix}.")
    return " ".join(parts)
