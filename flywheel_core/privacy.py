"""Privacy guard: find and redact secrets before any text leaves for an external endpoint.

Each detector is a regex with a kind. A secret found in a request is replaced by a stable
placeholder (`<REDACTED_AWS_KEY_1>`): the same secret gets the same placeholder everywhere in one
request, different secrets of one kind get 1, 2, ... For assignments (`password = "..."`) and
connection strings only the secret part is replaced, so the code keeps its meaning for the
teacher. Policies: `redact` (replace and send), `block` (send nothing if anything is found),
`off` (send as is).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

PrivacyPolicy = Literal["redact", "block", "off"]

# (kind, pattern, group holding the secret: 0 = the whole match)
_DETECTORS: list[tuple[str, re.Pattern[str], int]] = [
    (
        "PRIVATE_KEY",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE "
            r"KEY-----|\Z)",
            re.DOTALL,
        ),
        0,
    ),
    ("AWS_KEY", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{16}\b"), 0),
    (
        "AWS_SECRET",
        re.compile(
            r"(?i)aws.{0,20}?(?:secret|private).{0,20}?[=:]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
        ),
        1,
    ),
    ("GITHUB_TOKEN", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{22,})\b"), 0),
    ("SLACK_TOKEN", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"), 0),
    (
        "CONNECTION_PASSWORD",
        re.compile(r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@\"']+:([^\s@/\"']+)@[^\s\"']+", re.I),
        1,
    ),
    ("BEARER_TOKEN", re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{16,})"), 1),
    (
        "PASSWORD",
        re.compile(
            r"(?i)\b[\w.-]*(?:passw(?:or)?d|passwd|pwd|secret|api_?key|token)[\w.-]*[\"']?"
            r"\s*(?:=|:|:=)\s*(?:[\"']([^\"'\n]{3,})[\"']|([^\s\"',;()\[\]{}#]{3,}))"
        ),
        -1,  # first non-empty of groups 1, 2
    ),
]


@dataclass
class Redactor:
    """Redacts one request: keeps the secret -> placeholder map so placeholders stay stable."""

    placeholders: dict[str, str] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)

    def _placeholder(self, kind: str, secret: str) -> str:
        if secret not in self.placeholders:
            self.counts[kind] += 1
            self.placeholders[secret] = f"<REDACTED_{kind}_{self.counts[kind]}>"
        return self.placeholders[secret]

    def redact(self, text: str) -> str:
        for kind, pattern, group in _DETECTORS:
            text = pattern.sub(lambda m, k=kind, g=group: self._replace(m, k, g), text)
        return text

    def _replace(self, match: re.Match[str], kind: str, group: int) -> str:
        if group == -1:  # assignment: a quoted value is a secret, a bare name may be code
            group = 1 if match.group(1) is not None else 2
            if group == 2 and _looks_like_code(match.group(2)):
                return match.group(0)
        secret = match.group(group)
        if not secret or secret.startswith("<REDACTED_"):
            return match.group(0)
        start, end = match.span(group)
        offset = match.start(0)
        whole = match.group(0)
        return whole[: start - offset] + self._placeholder(kind, secret) + whole[end - offset :]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _looks_like_code(value: str) -> bool:
    """`password = get_password()`, `token: str`, `pwd = os.environ[...]` are code, not secrets."""
    return bool(re.fullmatch(r"[A-Za-z_][\w.]*|\d{1,3}", value)) and not re.search(r"\d{2}", value)


def find_secrets(text: str) -> Counter:
    """Kinds and counts of distinct secrets in `text` (nothing is changed)."""
    redactor = Redactor()
    redactor.redact(text)
    return redactor.counts
