"""Scores of a model on one evaluation set, and of a candidate against the serving model.

The held-out evaluation scores every model on several sets: the seed corpus's held-out split
("seed"), the reviewers' held-out feedback ("reviewers", grown batch by batch) and any set a user
registers. Each score carries its 95% intervals, the majority-class baseline of the set and the
share of answers that went to each severity (a student that answers one label everywhere shows
it here before anywhere else).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from flywheel_core.feedback.validation import content_sha256
from flywheel_core.severity import SEVERITIES
from flywheel_core.teaching.intervals import bootstrap_macro_f1, paired_difference, wilson
from flywheel_core.teaching.metrics import classification_report

SEED_SET = "seed"
REVIEWERS_SET = "reviewers"


def shares(labels: Sequence[str]) -> dict[str, float]:
    """Share of each severity among the labels (all four keys, 0.0 when absent)."""
    counts = Counter(labels)
    total = len(labels) or 1
    return {c: counts[c] / total for c in SEVERITIES}


def score_set(truth: Sequence[str], predicted: Sequence[str], confidence: float = 0.95) -> dict:
    """Accuracy and macro-F1 with intervals, per-class numbers, answer and class shares."""
    report = classification_report(truth, predicted)
    acc_low, acc_high = wilson(report["correct"], report["n"], confidence)
    f1_low, f1_high = bootstrap_macro_f1(truth, predicted, confidence)
    class_shares = shares(truth)
    return {
        **report,
        "accuracy_low": acc_low,
        "accuracy_high": acc_high,
        "macro_f1_low": f1_low,
        "macro_f1_high": f1_high,
        "answers": shares(predicted),
        "class_shares": class_shares,
        "majority": max(class_shares.values()) if truth else 0.0,
    }


def compare_on_set(
    truth: Sequence[str],
    incoming: Sequence[str],
    candidate: Sequence[str],
    confidence: float = 0.95,
) -> dict:
    """Both models' scores on one set plus the paired accuracy difference (candidate - incoming)."""
    delta, low, high = paired_difference(truth, incoming, candidate, confidence)
    return {
        "incoming": score_set(truth, incoming, confidence),
        "candidate": score_set(truth, candidate, confidence),
        "delta": delta,
        "delta_low": low,
        "delta_high": high,
    }


def concentrated_classes(score: dict, max_excess: float) -> list[str]:
    """Severities the model answers far more often than they occur in the set.

    A class is concentrated when its share of the answers exceeds its share of the set by more
    than ``max_excess`` (0.35: a class that is 25% of the set and gets over 60% of the answers).
    """
    return [
        c for c in SEVERITIES if score["answers"][c] - score["class_shares"][c] > max_excess + 1e-12
    ]


def load_eval_set(name: str, path: str) -> pl.DataFrame:
    """A user-registered evaluation set: a JSONL file of rows with code, review and severity.

    Item ids are ``<name>:<content hash>``, so its cached predictions never mix with another
    set's; a row with an unknown severity is an error naming the file and line.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"evaluation set {name!r}: {file} does not exist")
    rows = []
    for line_no, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("severity") not in SEVERITIES:
            raise ValueError(
                f"evaluation set {name!r}: {file}:{line_no} has severity "
                f"{row.get('severity')!r}, expected one of {', '.join(SEVERITIES)}"
            )
        code, review = row.get("code") or "", row["review"]
        rows.append(
            {
                "item_id": f"{name}:{content_sha256(code, review)[:16]}",
                "source": name,
                "code": code,
                "review": review,
                "severity": row["severity"],
            }
        )
    return pl.DataFrame(rows).unique("item_id", keep="first", maintain_order=True)
