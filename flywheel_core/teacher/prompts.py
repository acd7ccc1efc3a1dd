"""Prompts for the LLM teacher: inputs as redacted JSON data between markers, output schemas."""

from __future__ import annotations

import json
from typing import Any

from flywheel_core.privacy import Redactor
from flywheel_core.prompts import render_prompt
from flywheel_core.severity import SEVERITIES, task_description

MAX_CODE_CHARS = 2000

_ITEM = {
    "type": "object",
    "properties": {
        "item_id": {"type": "string"},
        "code": {"type": "string"},
        "review": {"type": "string"},
        "severity": {"type": "string", "enum": list(SEVERITIES)},
    },
    "required": ["severity"],
}
# A new training example also carries the teacher's reference explanation of its severity.
_EXAMPLE = {
    **_ITEM,
    "properties": {**_ITEM["properties"], "explanation": {"type": "string"}},
    "required": ["severity", "explanation"],
}

EXAM_SCHEMA = {
    "name": "exam",
    "schema": {
        "type": "object",
        "properties": {"questions": {"type": "array", "items": _ITEM}},
        "required": ["questions"],
    },
}
EVALUATION_SCHEMA = {
    "name": "exam_evaluation",
    "schema": {
        "type": "object",
        "properties": {
            "feedback": {"type": "string"},
            "proficiency": {"type": "integer", "minimum": 1, "maximum": 10},
            "dataset": {"type": "array", "items": _EXAMPLE},
        },
        "required": ["feedback", "proficiency", "dataset"],
    },
}
JUDGE_SCHEMA = {
    "name": "explanation_verdict",
    "schema": {
        "type": "object",
        "properties": {
            "reason": {"type": "string"},
            "winner": {"type": "string", "enum": ["A", "B", "tie"]},
        },
        "required": ["reason", "winner"],
    },
}


def redact_strings(value: Any, redactor: Redactor | None) -> Any:
    """The same structure with every string redacted (unchanged when the policy is off)."""
    if redactor is None:
        return value
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, list):
        return [redact_strings(v, redactor) for v in value]
    if isinstance(value, dict):
        return {k: redact_strings(v, redactor) for k, v in value.items()}
    return value


def data_block(payload: Any, redactor: Redactor | None) -> str:
    """JSON for between the markers; `<<<`/`>>>` inside strings are escaped so data can't close
    the block (the JSON still decodes to the same text)."""
    text = json.dumps(redact_strings(payload, redactor), ensure_ascii=False, indent=1)
    return text.replace("<<<", "\\u003c\\u003c\\u003c").replace(">>>", "\\u003e\\u003e\\u003e")


def item_payload(item: dict, redactor: Redactor | None, with_severity: bool = True) -> dict:
    """The item as shown to the teacher: code redacted first, then cut to MAX_CODE_CHARS (cut
    first, a secret at the cut would no longer match its pattern and half of it would leave)."""
    code = redact_strings(item["code"], redactor)[:MAX_CODE_CHARS]
    out = {"item_id": item["item_id"], "code": code}
    out["review"] = item["review"]
    if with_severity:
        out["severity"] = item["severity"]
    return out


def exam_prompt(
    counts: dict[str, int],
    candidates: list[dict],
    previous_proficiency: int | None,
    previous_feedback: str | None,
    redactor: Redactor | None,
) -> str:
    return render_prompt(
        "exam_generation",
        task=task_description(),
        previous_proficiency=previous_proficiency or "unknown (first exam)",
        previous_feedback=redact_strings(previous_feedback or "none yet", redactor),
        num_questions=sum(counts.values()),
        allocation=json.dumps(counts),
        data_source=data_block([item_payload(c, redactor) for c in candidates], redactor),
    )


def evaluation_prompt(
    report: dict,
    graded: list[dict],
    counts: dict[str, int],
    candidates: list[dict],
    redactor: Redactor | None,
) -> str:
    per_class = {
        c: {"precision": round(v["precision"], 3), "recall": round(v["recall"], 3)}
        for c, v in report["per_class"].items()
    }
    confusions = {
        f"{t} -> {p}": n for t, row in report["confusion"].items() for p, n in row.items() if n
    }
    results = [
        {
            **item_payload(q, redactor, with_severity=False),
            "answer_key": q["severity"],
            "student_answer": q["predicted"],
        }
        for q in graded
    ]
    return render_prompt(
        "exam_evaluation",
        task=task_description(),
        accuracy=f"{report['accuracy']:.3f}",
        per_class=json.dumps(per_class),
        confusions=json.dumps(confusions),
        results=data_block(results, redactor),
        num_examples=sum(counts.values()),
        allocation=json.dumps(counts),
        data_source=data_block([item_payload(c, redactor) for c in candidates], redactor),
    )


def judge_prompt(
    item: dict,
    explanation_a: str,
    explanation_b: str,
    reference: str | None,
    redactor: Redactor | None,
) -> str:
    payload = {
        "finding": item_payload(item, redactor),
        "explanation_A": explanation_a,
        "explanation_B": explanation_b,
    }
    if reference:
        payload["reference_explanation"] = reference
    return render_prompt(
        "judge_explanations", task=task_description(), data=data_block(payload, redactor)
    )
