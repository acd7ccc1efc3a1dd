"""Seed corpus built reproducibly from pylint's documented message examples.

The pylint sdist (pinned version and sha256) ships ``doc/data/messages/<l>/<symbol>/`` with a
``bad.py`` (or a ``bad/`` directory) per message. Each bad snippet becomes one row: the code with
the answer-revealing ``# [symbol]`` markers stripped, a reviewer-style comment derived from the
message description, and a severity derived from the message category.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import polars as pl

logger = logging.getLogger(__name__)

PYLINT_VERSION = "4.1.4"
PYLINT_SDIST_SHA256 = "4c9176dc6c9f1b98b742195f01899b290369d5a27b4b41d1014c17f2f96b26f1"
# Bump when the row-building logic changes, so cached parquet files are rebuilt.
CORPUS_BUILDER_VERSION = 1
HELDOUT_FRACTION = 0.2
SOURCE = "pylint"

SEVERITY_BY_CATEGORY: dict[str, str] = {
    "F": "critical",
    "E": "critical",
    "W": "major",
    "R": "minor",
    "C": "trivial",
    "I": "trivial",
}
SEVERITIES: tuple[str, ...] = ("critical", "major", "minor", "trivial")

# Messages whose defect *is* whitespace / line endings: cleaning them would erase the defect.
WHITESPACE_SENSITIVE: frozenset[str] = frozenset(
    {
        "trailing-whitespace",
        "trailing-newlines",
        "missing-final-newline",
        "mixed-line-endings",
        "unexpected-line-ending-format",
    }
)

SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "source": pl.String(),
    "rule": pl.String(),
    "msgid": pl.String(),
    "category": pl.String(),
    "severity": pl.String(),
    "code": pl.String(),
    "review": pl.String(),
    "good_code": pl.String(),
    "details": pl.String(),
    "split": pl.String(),
    "content_sha256": pl.String(),
}

_MESSAGES_PREFIX = "doc/data/messages/"
# "# [symbol]", "# [a, b]", "# +1: [symbol]", "# -2:[symbol]", "# 2:[symbol]" up to end of line.
_MARKER_RE = re.compile(
    r"[ \t]*#[ \t]*(?:[+-]?\d+[ \t]*:[ \t]*)?\[[a-z0-9-]+(?:[ \t]*,[ \t]*[a-z0-9-]+)*\](?=[ \t]*$)"
)
_LINE_SPLIT_RE = re.compile(r"(?<=\n)")


# --------------------------------------------------------------------------- sdist


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise ``RuntimeError`` (naming file, expected and actual hash) on a mismatch."""
    if not path.is_file():
        raise RuntimeError(f"{path}: file not found (expected sha256 {expected})")
    actual = sha256_file(path)
    if actual != expected:
        raise RuntimeError(f"sha256 mismatch for {path}: expected {expected}, got {actual}")


def sdist_cache_path(cache_dir: Path, version: str = PYLINT_VERSION) -> Path:
    """Where the pylint sdist is cached."""
    return Path(cache_dir) / f"pylint-{version}.tar.gz"


def fetch_pylint_sdist(cache_dir: Path) -> Path:
    """Return the verified pylint sdist in ``cache_dir``, downloading it with pip if needed."""
    cache_dir = Path(cache_dir)
    target = sdist_cache_path(cache_dir)
    if target.is_file():
        try:
            verify_sha256(target, PYLINT_SDIST_SHA256)
            return target
        except RuntimeError as exc:
            logger.warning("discarding cached sdist: %s", exc)
            target.unlink()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".pip-download-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download",
            "--no-deps", "--no-binary=:all:", "--disable-pip-version-check",
            f"pylint=={PYLINT_VERSION}", "-d", tmp,
        ]  # fmt: skip
        logger.info("downloading pylint %s sdist: %s", PYLINT_VERSION, " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        downloaded = Path(tmp) / target.name
        if proc.returncode != 0 or not downloaded.is_file():
            raise RuntimeError(
                f"pip download of pylint=={PYLINT_VERSION} sdist into {target} failed "
                f"(exit {proc.returncode}); stderr:\n{proc.stderr.strip()}"
            )
        verify_sha256(downloaded, PYLINT_SDIST_SHA256)
        shutil.move(str(downloaded), target)
    return target


def read_message_examples(sdist: Path) -> dict[str, dict[str, bytes]]:
    """Map symbol -> {relative path inside the message dir: bytes} from the sdist."""
    out: dict[str, dict[str, bytes]] = defaultdict(dict)
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            parts = PurePosixPath(member.name).parts
            # <pkg>/doc/data/messages/<letter>/<symbol>/<rest...>
            if len(parts) < 7 or "/".join(parts[1:4]) + "/" != _MESSAGES_PREFIX:
                continue
            symbol, rest = parts[5], "/".join(parts[6:])
            fh = tar.extractfile(member)
            if fh is not None:
                out[symbol][rest] = fh.read()
    return dict(out)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class MessageInfo:
    """What the corpus needs from one pylint message definition."""

    symbol: str
    msgid: str
    description: str
    template: str


@functools.cache
def load_message_definitions() -> dict[str, MessageInfo]:
    """Symbol (and old names) -> MessageInfo, from the installed pylint with all extensions."""
    import pylint
    from pylint.checkers import initialize as initialize_checkers
    from pylint.extensions import initialize as initialize_extensions
    from pylint.lint import PyLinter

    if pylint.__version__ != PYLINT_VERSION:
        raise RuntimeError(
            f"installed pylint is {pylint.__version__}, but the corpus is pinned to "
            f"{PYLINT_VERSION}: message descriptions must come from the same release"
        )
    linter = PyLinter()
    initialize_checkers(linter)
    initialize_extensions(linter)
    infos: dict[str, MessageInfo] = {}
    for definition in linter.msgs_store.messages:
        info = MessageInfo(
            symbol=definition.symbol,
            msgid=definition.msgid,
            description=" ".join(definition.description.split()),
            template=definition.msg,
        )
        infos[definition.symbol] = info
        for _old_msgid, old_symbol in definition.old_names:
            infos.setdefault(old_symbol, info)
    return infos


# --------------------------------------------------------------------------- code cleaning


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def strip_markers(text: str, *, keep_whitespace: bool = False) -> str:
    """Remove pylint's expected-message markers; clean trailing whitespace unless told not to."""
    if not keep_whitespace:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = _LINE_SPLIT_RE.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    out: list[str] = []
    for line in lines:
        body = line.rstrip("\r\n")
        eol = line[len(body) :]
        stripped = _MARKER_RE.sub("", body)
        if stripped != body and not stripped.strip():
            # marker-only line: drop it; if it was the unterminated last line, the line before
            # loses its terminator too (keeps e.g. a missing final newline missing).
            if not eol and out and keep_whitespace:
                prev = out[-1]
                out[-1] = prev.rstrip("\r\n")
            continue
        out.append(stripped + eol)
    result = "".join(out)
    if keep_whitespace:
        return result
    cleaned = [line.rstrip() for line in result.split("\n")]
    while cleaned and not cleaned[-1]:
        cleaned.pop()
    while cleaned and not cleaned[0]:
        cleaned.pop(0)
    return "\n".join(cleaned) + "\n" if cleaned else ""


def _join_files(files: list[tuple[str, str]]) -> str:
    """One text for a multi-file example: each file under a ``# file: name`` header."""
    if len(files) == 1:
        return files[0][1]
    return "\n".join(f"# file: {name}\n{text}" for name, text in files)


# --------------------------------------------------------------------------- review text

_LEAD_RE = re.compile(
    r"^(?:This message is (?:emitted|raised)|The warning is emitted|Used|(?:Only )?[Ee]mitted"
    r"|Raised|Reported)"
    r" (?:whenever|when|if|where) ",
)
_USED_TO_RE = re.compile(r"^Used (?:in order )?to (?:highlight|inform that) ")
_OPENERS = ("Looks like {}.", "Here, {}.", "In this snippet, {}.", "Heads-up: {}.")
_WORD_FIXES: tuple[tuple[str, str], ...] = (
    (r"\bwhen pylint encounters\b", "when the code contains"),
    (r"\bpylint detects that\b", "it looks like"),
    (r"\bpylint has been unable to\b", "it is not possible to"),
    (r"\ba pylint configuration file\b", "a linter configuration file"),
    (r"\bwe (?:can )?detect that\s+", ""),
    (r"\bwe detect\b", "there is"),
    (r"\bit will warn when it encounters\b", "this applies when there is"),
    (r"\binline pylint\b", "inline linter"),
    (r"\b[Pp]ylint encounters\b", "the code contains"),
    (r"\b[Pp]ylint discourages\b", "Style guides discourage"),
    (r"\b[Pp]ylint\b", "the linter"),
    (r"\ba syntax error\b", "a SyntaxError"),
    (r"\bsyntax error\b", "SyntaxError"),
    (r"\ban error\b", "a bug"),
    (r"\berror-handling\b", "failure-handling"),
    (r"\berror\b", "failure"),
    (r"\ba warning note\b", "a reminder note"),
    (r"\bconvention\b", "practice"),
    (r"\brefactor\b", "rewrite"),
    (r"``", "`"),
    (r"\s+([.,;:!?])(?=\s|$)", r"\1"),
)
_DROP_SENTENCE_RE = re.compile(
    r"\b(?:emitted|this message|this check|warning|disabled by default|please report"
    r"|[CRWEIF]\d{4})\b",
    re.I,
)
_FORBIDDEN_WORDS_RE = re.compile(r"\b(?:error|warning|convention|refactor|fatal|info)\b", re.I)
# single-word symbols that also occur as plain words in descriptions / templates
_SINGLE_WORD_SYMBOL_SYNONYMS = {
    "fixme": "to-do",
    "unreachable": "dead",
    "reimported": "re-imported",
}
_PLACEHOLDER = "\x00"
_QUOTED_PLACEHOLDER = "\x01"
_PLACEHOLDER_RE = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[srdifx]")
_TRAILING_JUNK_RE = re.compile(
    r"(?:[\s,]+(?:using|use|not|in|of|with|for|to|by|from|as|be|instead|between the operands))*"
    r"[\s:,;.-]*$",
    re.I,
)
_LEADING_WORD_RE = re.compile(r"^[A-Za-z_(`'\"]")
_NEEDS_OBJECT_WORDS = frozenset(
    {"for", "with", "to", "of", "in", "on", "by", "from", "as", "use", "using", "be", "is", "than",
     "and", "or", "the", "a", "an", "not", "consider", "could", "should", "instead", "have",
     "between", "after", "before", "at", "has"}
)  # fmt: skip
_DANGLING_WORDS = frozenset(
    {"be", "could", "should", "would", "can", "must", "is", "are", "a", "the"}
)


def _split_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z`'\"(])", text.strip()) if s]


def _fix_words(text: str) -> str:
    for pattern, repl in _WORD_FIXES:
        text = re.sub(pattern, repl, text)
    return text


def template_headline(template: str) -> str | None:
    """The message template with placeholders removed, or None when nothing sensible remains.

    A placeholder is dropped at the end ("Undefined variable %r") or as a name right after a noun
    ("Attribute %r defined"); where the sentence needs it ("Using global for %r but"), or when
    it is quoted or leads the sentence, the template is not used.
    """
    text = " ".join(template.split("\n")[0].split())
    text = _PLACEHOLDER_RE.sub(_PLACEHOLDER, text)
    text = re.sub(rf"\s*\([^()]*{_PLACEHOLDER}[^()]*\)", "", text)
    text = re.sub(rf"(['\"`])[^'\"`]*{_PLACEHOLDER}[^'\"`]*\1", _QUOTED_PLACEHOLDER, text)
    first = _split_sentences(" ".join(text.split()))
    if not first or first[0].startswith((_PLACEHOLDER, _QUOTED_PLACEHOLDER)):
        return None
    text = first[0].rstrip(".!?")
    if _PLACEHOLDER_RE.search(template):  # trim what led up to a dropped trailing placeholder
        text = _TRAILING_JUNK_RE.sub("", text)
        text = text.removesuffix(_PLACEHOLDER).removesuffix(_QUOTED_PLACEHOLDER)
        text = _TRAILING_JUNK_RE.sub("", text)
    if _QUOTED_PLACEHOLDER in text:
        return None
    for match in re.finditer(rf"(\S*)\s*{_PLACEHOLDER}(\S?)", text):
        before, after = match.group(1), match.group(2)
        if not before.isalpha() or before.lower() in _NEEDS_OBJECT_WORDS or after not in ("", ","):
            return None
    text = " ".join(text.replace(_PLACEHOLDER, " ").split()).replace(" ,", ",")
    if len(text.split()) < 2 or not _LEADING_WORD_RE.match(text):
        return None
    if text.split()[-1].lower() in _DANGLING_WORDS:
        return None
    return _capitalize(text)


def _capitalize(text: str) -> str:
    """Upper-case the first letter unless the first word is an identifier (``os.environ``)."""
    return text[0].upper() + text[1:] if re.match(r"[a-z]+(?:\s|$)", text) else text


def _unlabel(match: re.Match[str]) -> str:
    """Replacement for a symbol that leaked into the review: plain words instead of the label."""
    found = match.group(0)
    if "-" in found:
        return found.replace("-", " ")
    repl = _SINGLE_WORD_SYMBOL_SYNONYMS.get(found.lower(), "flagged")
    return repl[0].upper() + repl[1:] if found.istitle() else repl


def build_review(info: MessageInfo, item_id: str) -> str:
    """Reviewer-style comment from a message's description (and template when it helps)."""
    sentences = _split_sentences(info.description)
    if not sentences:
        sentences = [info.template]
    first, rest = sentences[0], sentences[1:]
    lead = _LEAD_RE.match(first) or _USED_TO_RE.match(first)
    parts: list[str] = []
    if lead:
        clause = first[lead.end() :].rstrip(" .")
        if _USED_TO_RE.match(first):
            clause = "there is " + clause if first.startswith("Used in") else clause
        opener = _OPENERS[int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % len(_OPENERS)]
        body = opener.format(clause)
    else:
        body = first if first.endswith((".", "!", "?")) else first + "."
    body = _capitalize(body)
    parts.append(body)
    parts.extend(s for s in rest if not _DROP_SENTENCE_RE.search(s))
    headline = template_headline(info.template)
    text = _fix_words(" ".join(parts))
    if headline:
        headline = _fix_words(headline)
        if headline.lower().rstrip(".") not in text.lower():
            text = f"{headline}. {text}"
    text = _FORBIDDEN_WORDS_RE.sub("issue", text)
    for needle in (info.symbol, info.msgid):
        text = re.sub(re.escape(needle), _unlabel, text, flags=re.I)
    return " ".join(text.split())


# --------------------------------------------------------------------------- corpus


def _split_rank(rule: str) -> int:
    return int(hashlib.sha256(f"heldout:{rule}".encode()).hexdigest(), 16)


def assign_splits(rules_by_severity: dict[str, list[str]]) -> dict[str, str]:
    """Rule -> split. Within each severity, the rules with the lowest hash ranks are held out.

    Deciding per rule keeps sibling snippets of one message (which share a review) in one split;
    ranking by a hash means adding a rule moves at most one other rule across the boundary.
    """
    out: dict[str, str] = {}
    for rules in rules_by_severity.values():
        ordered = sorted(set(rules), key=lambda r: (_split_rank(r), r))
        n_heldout = round(len(ordered) * HELDOUT_FRACTION)
        for i, rule in enumerate(ordered):
            out[rule] = "heldout" if i < n_heldout else "train"
    return out


def _examples(files: dict[str, bytes], kind: str) -> list[tuple[str, str]]:
    """(name, text) example groups of ``kind`` ("bad"/"good"); packages become one group."""
    if f"{kind}.py" in files:
        return [(f"{kind}.py", _decode(files[f"{kind}.py"]))]
    prefix = f"{kind}/"
    members = sorted(
        (p[len(prefix) :], _decode(b)) for p, b in files.items() if p.startswith(prefix)
    )
    members = [(name, text) for name, text in members if name.endswith(".py")]
    if any(name == "__init__.py" for name, _ in members):  # a package: one multi-file example
        body = [(name, text) for name, text in members if name != "__init__.py"]
        return [("/".join(n for n, _ in body), _join_files(body))] if body else []
    return members


def build_seed_corpus(cache_dir: Path) -> pl.DataFrame:
    """Build the seed corpus (deterministic rows and order) from the pinned pylint sdist."""
    sdist = fetch_pylint_sdist(cache_dir)
    examples = read_message_examples(sdist)
    infos = load_message_definitions()
    rows: list[dict[str, str | None]] = []
    unknown: list[str] = []
    empty = 0
    for symbol in sorted(examples):
        files = examples[symbol]
        bad = _examples(files, "bad")
        if not bad:
            continue
        info = infos.get(symbol)
        if info is None:
            unknown.append(symbol)
            continue
        keep_ws = info.symbol in WHITESPACE_SENSITIVE
        good = _examples(files, "good")
        good_code = (
            _join_files([(n, strip_markers(t, keep_whitespace=keep_ws)) for n, t in good])
            if good
            else None
        )
        details_raw = files.get("details.rst", files.get("detail.rst"))
        details = (_decode(details_raw).strip() or None) if details_raw is not None else None
        cleaned = [(name, strip_markers(text, keep_whitespace=keep_ws)) for name, text in bad]
        cleaned = [(name, code) for name, code in cleaned if code.strip()]
        empty += len(bad) - len(cleaned)
        for n, (_name, code) in enumerate(cleaned, start=1):
            item_id = f"{SOURCE}:{symbol}" + (f":{n}" if len(cleaned) > 1 else "")
            review = build_review(info, item_id)
            category = info.msgid[0]
            rows.append(
                {
                    "item_id": item_id,
                    "source": SOURCE,
                    "rule": info.symbol,
                    "msgid": info.msgid,
                    "category": category,
                    "severity": SEVERITY_BY_CATEGORY[category],
                    "code": code,
                    "review": review,
                    "good_code": good_code,
                    "details": details,
                    "split": None,
                    "content_sha256": hashlib.sha256(f"{code}\n{review}".encode()).hexdigest(),
                }
            )
    if unknown:
        logger.info("skipped %d examples of messages unknown to pylint: %s", len(unknown), unknown)
    if empty:
        logger.info("skipped %d snippets that are empty once markers are stripped", empty)
    rules_by_severity: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        rules_by_severity[str(row["severity"])].append(str(row["rule"]))
    splits = assign_splits(rules_by_severity)
    for row in rows:
        row["split"] = splits[str(row["rule"])]
    frame = pl.DataFrame(rows, schema=SCHEMA)
    logger.info("built pylint seed corpus: %d rows", frame.height)
    return frame


def corpus_cache_path(cache_dir: Path) -> Path:
    """Parquet cache path, keyed by pylint version, sdist hash and builder version."""
    key = f"{PYLINT_VERSION}-{PYLINT_SDIST_SHA256[:16]}-v{CORPUS_BUILDER_VERSION}"
    return Path(cache_dir) / f"pylint-seed-corpus-{key}.parquet"


def load_or_build_seed_corpus(cache_dir: Path) -> pl.DataFrame:
    """The seed corpus from its parquet cache, building (and caching) it when absent."""
    path = corpus_cache_path(cache_dir)
    if path.is_file():
        try:
            frame = pl.read_parquet(path)
            if frame.schema == pl.Schema(SCHEMA):
                return frame
            logger.warning("cached corpus %s has an unexpected schema; rebuilding", path)
        except Exception as exc:  # corrupt cache file: rebuild
            logger.warning("could not read cached corpus %s (%s); rebuilding", path, exc)
    frame = build_seed_corpus(cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)
    return frame
