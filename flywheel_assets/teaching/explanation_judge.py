"""Offline judge of two severity explanations: a documented proxy, never a coin.

An explanation scores higher when it is close to the reference explanation (or, without one, to
the finding itself), names the severity the finding has, names no other severity, and does more
than copy the reviewer's comment. Similarity is behind `TextSimilarity` so a sentence-embedding
model (e.g. MiniLM) can replace the lexical default without touching the rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from flywheel_assets.severity import SEVERITIES
from flywheel_assets.teaching.similarity import embed

TIE_MARGIN = 0.05
COPY_THRESHOLD = 0.9
MIN_WORDS = 5


class TextSimilarity(Protocol):
    def __call__(self, a: str, b: str) -> float: ...


def lexical_similarity(a: str, b: str) -> float:
    """Cosine of hashed bag-of-words vectors (0 for an empty text)."""
    vectors = embed([a, b])
    return float(vectors[0] @ vectors[1])


@dataclass(frozen=True)
class ProxyVerdict:
    winner: str
    reason: str
    score_a: float
    score_b: float


def named_severities(text: str) -> set[str]:
    words = set(re.findall(r"[a-z]+", text.lower()))
    return {s for s in SEVERITIES if s in words}


def score_explanation(
    item: dict, explanation: str, reference: str | None, similarity: TextSimilarity
) -> tuple[float, list[str]]:
    """A score (higher is better) and the reasons for it."""
    notes: list[str] = []
    anchor = reference or f"{item['review']} {item['code']}"
    score = similarity(explanation, anchor) * (1.0 if reference else 0.5)
    named = named_severities(explanation)
    if item["severity"] in named:
        score += 0.3
        notes.append(f"names {item['severity']}")
    if named - {item["severity"]}:
        score -= 0.3
        notes.append(f"names other severities {sorted(named - {item['severity']})}")
    if similarity(explanation, item["review"]) > COPY_THRESHOLD:
        score -= 0.3
        notes.append("copies the review")
    if len(explanation.split()) < MIN_WORDS:
        score -= 0.2
        notes.append("too short")
    return score, notes


def judge_by_proxy(
    item: dict,
    explanation_a: str,
    explanation_b: str,
    reference: str | None = None,
    similarity: TextSimilarity = lexical_similarity,
) -> ProxyVerdict:
    """ "A", "B" or "tie" (scores within TIE_MARGIN), with the scores and reasons."""
    score_a, notes_a = score_explanation(item, explanation_a, reference, similarity)
    score_b, notes_b = score_explanation(item, explanation_b, reference, similarity)
    if abs(score_a - score_b) <= TIE_MARGIN:
        winner = "tie"
    else:
        winner = "A" if score_a > score_b else "B"
    reason = (
        f"proxy scores A={score_a:.2f} ({', '.join(notes_a) or 'no signals'}), "
        f"B={score_b:.2f} ({', '.join(notes_b) or 'no signals'})"
    )
    return ProxyVerdict(winner, reason, round(score_a, 4), round(score_b, 4))
