"""Exact exam metrics, computed by code and never trusted to a language model."""

from __future__ import annotations

from collections.abc import Sequence

from flywheel_core.severity import SEVERITIES


def confusion_matrix(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, dict[str, int]]:
    """confusion[answer_key][student_answer] = count, over all four severities."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} answer keys but {len(predicted)} answers")
    matrix = {t: dict.fromkeys(SEVERITIES, 0) for t in SEVERITIES}
    for t, p in zip(truth, predicted, strict=True):
        if t not in matrix or p not in matrix:
            raise ValueError(f"unknown severity in pair ({t!r}, {p!r})")
        matrix[t][p] += 1
    return matrix


def classification_report(truth: Sequence[str], predicted: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro-F1 and the confusion matrix."""
    matrix = confusion_matrix(truth, predicted)
    per_class = {}
    for label in SEVERITIES:
        tp = matrix[label][label]
        support = sum(matrix[label].values())
        predicted_n = sum(matrix[t][label] for t in SEVERITIES)
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    present = [c for c in SEVERITIES if per_class[c]["support"]]
    total = len(truth)
    correct = sum(matrix[c][c] for c in SEVERITIES)
    return {
        "n": total,
        "correct": correct,
        "accuracy": correct / total if total else 0.0,
        "macro_f1": sum(per_class[c]["f1"] for c in present) / len(present) if present else 0.0,
        "per_class": per_class,
        "confusion": matrix,
    }


def proficiency(report: dict) -> int:
    """1-10 from macro-F1: always answering one class scores about 2, a perfect exam 10."""
    return max(1, min(10, 1 + round(9 * report["macro_f1"])))


def top_confusions(report: dict, limit: int = 3) -> list[tuple[str, str, int]]:
    pairs = [
        (t, p, n) for t, row in report["confusion"].items() for p, n in row.items() if t != p and n
    ]
    return sorted(pairs, key=lambda x: (-x[2], SEVERITIES.index(x[0])))[:limit]


def weak_classes(report: dict, threshold: float = 0.6) -> list[str]:
    """Severities with recall under the threshold, weakest first."""
    rows = [(c, v["recall"]) for c, v in report["per_class"].items() if v["support"]]
    return [c for c, r in sorted(rows, key=lambda x: x[1]) if r < threshold]


def written_feedback(report: dict) -> str:
    """The teacher's note to the next cycle, naming the weak and the confused classes."""
    parts = [
        f"Accuracy {report['accuracy']:.0%} ({report['correct']}/{report['n']}), "
        f"macro-F1 {report['macro_f1']:.2f}."
    ]
    weak = weak_classes(report)
    if weak:
        recalls = ", ".join(f"{c} (recall {report['per_class'][c]['recall']:.0%})" for c in weak)
        parts.append(f"Weak severities: {recalls}.")
    else:
        parts.append("No severity falls below 60% recall.")
    confusions = top_confusions(report)
    if confusions:
        said = "; ".join(f"{t} rated as {p} {n}x" for t, p, n in confusions)
        parts.append(f"Most frequent confusions: {said}.")
    favoured = max(SEVERITIES, key=lambda c: sum(report["confusion"][t][c] for t in SEVERITIES))
    share = sum(report["confusion"][t][favoured] for t in SEVERITIES) / max(report["n"], 1)
    if share > 0.5:
        parts.append(f"The student answers '{favoured}' for {share:.0%} of the questions.")
    return " ".join(parts)
