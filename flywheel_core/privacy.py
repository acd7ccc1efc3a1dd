"""Privacy guard: find and redact secrets before any text leaves for an external endpoint.

Each detector is a regex with a kind. A secret found in a request is replaced by a stable
placeholder (`<REDACTED_AWS_KEY_1>`): the same secret gets the same placeholder everywhere in one
request, different secrets of one kind get 1, 2, ... For assignments (`password = "..."`,
`SECRET_KEY = b"..."`), connection strings, Authorization headers and `mysql -p...` only the
secret part is replaced, so the code keeps its meaning for the teacher. Secrets written in prose
("the AWS secret is ...", "my password was ...") are caught by a last pass: a token that looks
random (several character classes, long enough) within a few words after key / secret / token /
password words is replaced too. Redact before cutting text to a length, never after: a cut
secret no longer matches its pattern. Policies: `redact` (replace and send), `block` (send
nothing if anything is found), `off` (send as is).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

PrivacyPolicy = Literal["redact", "block", "off"]

# (kind, pattern, group holding the secret: 0 = the whole match, -1 = an assignment's value)
_DETECTORS: list[tuple[str, re.Pattern[str], int]] = [
    (
        "PRIVATE_KEY",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?"
            r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
            re.DOTALL,
        ),
        0,
    ),
    ("AWS_KEY", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"), 0),
    (
        "AWS_SECRET",
        re.compile(
            r"(?i)aws.{0,30}?(?:secret|private).{0,30}?[=:]\s*[bru]?[\"']?"
            r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
        ),
        1,
    ),
    ("GITHUB_TOKEN", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{22,})"), 0),
    ("GITLAB_TOKEN", re.compile(r"\bgl(?:pat|dt|ptt|rt|cbt|oas|soat)-[A-Za-z0-9_-]{20,}"), 0),
    ("SLACK_TOKEN", re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}"), 0),
    ("SLACK_WEBHOOK", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"), 0),
    ("API_KEY", re.compile(r"\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{20,}"), 0),
    # An AWS secret key in prose: 40 base64 characters with both cases and a digit or / +
    # (a git sha is lowercase hex, so it never matches).
    (
        "AWS_SECRET",
        re.compile(
            r"(?<![\w/+=-])(?=[A-Za-z0-9/+]*[A-Z])(?=[A-Za-z0-9/+]*[a-z])"
            r"(?=[A-Za-z0-9/+]*[0-9/+])[A-Za-z0-9/+]{40}(?![\w/+=-])"
        ),
        0,
    ),
    (
        "CONNECTION_PASSWORD",
        re.compile(r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@\"']*:([^\s@/\"']+)@[^\s\"']+", re.I),
        1,
    ),
    # Authorization headers: anything after the scheme once the header is named; a bare
    # "Basic"/"Bearer" only with a token that looks random.
    (
        "AUTH_HEADER",
        re.compile(
            r"(?i)\b(?:proxy-)?authorization[\"']?\s*[:=,]\s*[\"']?"
            r"(?:basic|bearer|token|digest|apikey|sso-key)?\s*([^\s\"',;)}]{6,})"
        ),
        1,
    ),
    ("AUTH_HEADER", re.compile(r"(?i)\b(?:basic|bearer)\s+([A-Za-z0-9._~+/=-]{12,})"), -2),
    # mysql -p<password> (the value is glued to -p; "-p" alone prompts for it)
    (
        "CLI_PASSWORD",
        re.compile(
            r"\b(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlsh|mariadb)\b[^\n]*?"
            r"(?<=\s)-p(?!\s)('[^'\n]*'|\"[^\"\n]*\"|[^\s'\"]+)"
        ),
        1,
    ),
    (
        "PASSWORD",
        re.compile(
            r"(?i)\b[\w.-]*(?:passw(?:or)?d|passwd|pwd|passphrase|secret|api_?key|token|"
            r"credentials?)[\w.-]*(?:[\"']\])?[\"']?\s*(?:=|:|:=|=>)\s*"
            r"(?:[bru]{0,2}'([^'\n]{3,})'|[bru]{0,2}\"([^\"\n]{3,})\"|([^\s\"',;()\[\]{}#]{3,}))"
        ),
        -1,  # a quoted value (group 1 or 2), or a bare one (group 3) that is not code
    ),
]

# Words after which a token that looks random is a secret, in prose as in code ("the api key
# is ...", "my password was ...", "token abc123...").
_SECRET_WORDS = re.compile(
    r"(?i)\b(?:api[ _-]?keys?|access[ _-]?keys?|secret(?:[ _-]?keys?)?|secrets|tokens?|"
    r"passw(?:or)?ds?|passwd|passphrase|pwd|pw|credentials?|private[ _-]?keys?|keys?|"
    r"pins?|auth)\b"
)
_WINDOW = 80  # characters after the word, on the same line
_MIN_NEAR_WORD = 6  # shortest token there that can be a secret
_TOKEN = re.compile(r"<REDACTED_[A-Z_]+_\d+>|[^\s\"'`,;()\[\]{}<>]+")
_PUNCT = ".,;:!?)]}>\"'"


def _looks_secret(token: str, min_len: int = 8) -> bool:
    """Random-looking: long enough, not an identifier or a path, several character classes."""
    if len(token) < min_len or "://" in token or token.startswith("<REDACTED_"):
        return False
    lower, upper = re.search(r"[a-z]", token), re.search(r"[A-Z]", token)
    digits = len(re.findall(r"\d", token))
    symbol = re.search(r"[^\w.\-/]", token)
    letters = lower or upper
    if digits == len(token):
        return len(token) >= 8
    return bool(
        (lower and upper and digits)
        or (symbol and (letters or digits))
        or (letters and digits >= 2)
        or (lower and upper and len(token) >= 20 and not re.fullmatch(r"[A-Za-z_.]+", token))
    )


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
        return self._redact_near_words(text)

    def _redact_near_words(self, text: str) -> str:
        """Random-looking tokens shortly after key/secret/token/password words."""
        out, last = [], 0
        for word in _SECRET_WORDS.finditer(text):
            start = max(word.end(), last)
            line_end = text.find("\n", start)
            stop = min(start + _WINDOW, len(text) if line_end < 0 else line_end)
            while stop < len(text) and not text[stop].isspace():  # never split a token
                stop += 1
            out.append(text[last:start])
            window = text[start:stop]
            out.append(_TOKEN.sub(self._replace_token, window))
            last = stop
        out.append(text[last:])
        return "".join(out)

    def _replace_token(self, match: re.Match[str]) -> str:
        token = match.group(0)
        core = token.rstrip(_PUNCT)  # "... is s3cr3t." ends a sentence; "Pw0rd!" may end in "!"
        if _looks_secret(core, _MIN_NEAR_WORD):
            return self._placeholder("SECRET", core) + token[len(core) :]
        if _looks_secret(token, _MIN_NEAR_WORD):
            return self._placeholder("SECRET", token)
        return token

    def _replace(self, match: re.Match[str], kind: str, group: int) -> str:
        if group == -1:  # assignment: a quoted value is a secret, a bare name may be code
            group = next(g for g in (1, 2, 3) if match.group(g) is not None)
            if group == 3 and _looks_like_code(match.group(3)):
                return match.group(0)
        if group == -2:  # a bare Basic/Bearer: only a random-looking token
            group = 1
            if not _looks_secret(match.group(1), 12):
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
