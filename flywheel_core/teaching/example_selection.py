"""New training examples drawn from the data source near the questions the student got wrong."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from flywheel_core.severity import SEVERITIES
from flywheel_core.teaching.exam_design import stable_rank
from flywheel_core.teaching.similarity import max_similarity


def errors_involving(graded: Sequence[Mapping], severity: str) -> list[dict]:
    """Wrong answers whose answer key or whose (wrong) answer is `severity`."""
    return [
        dict(q)
        for q in graded
        if q["severity"] != q["predicted"] and severity in (q["severity"], q["predicted"])
    ]


def select_examples(
    graded: Sequence[Mapping],
    pool: Sequence[Mapping],
    quotas: Mapping[str, int],
    exclude_ids: Iterable[str],
    salt: str,
) -> list[dict]:
    """Per severity, the `quotas[severity]` pool items of that severity closest to its errors.

    `graded` are exam questions with their answer key (`severity`) and the student's answer
    (`predicted`). Items in `exclude_ids` (held-out, already in the curriculum, on this exam)
    are never chosen. Ties, and severities without errors, fall back to a salted stable order.
    """
    exclude = set(exclude_ids)
    chosen: list[dict] = []
    for severity in SEVERITIES:
        candidates = [
            dict(it) for it in pool if it["severity"] == severity and it["item_id"] not in exclude
        ]
        anchors = errors_involving(graded, severity)
        sims = max_similarity(candidates, anchors)
        order = sorted(
            range(len(candidates)),
            key=lambda i: (-round(float(sims[i]), 6), stable_rank(candidates[i]["item_id"], salt)),
        )
        for i in order[: quotas.get(severity, 0)]:
            candidates[i]["near_error_similarity"] = float(sims[i])
            chosen.append(candidates[i])
    return chosen
