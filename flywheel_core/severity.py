"""The four severities of a review finding, most to least serious."""

SEVERITIES: tuple[str, ...] = ("critical", "major", "minor", "trivial")

DEFINITIONS: dict[str, str] = {
    "critical": "security holes, crashes, or code that makes the program exit abruptly",
    "major": "serious bugs that make the system produce wrong results",
    "minor": "unexpected or unwanted behaviour that does not disrupt the system",
    "trivial": "no noticeable effect: docstrings, comments, formatting, naming",
}


def task_description() -> str:
    """The task in words, as the teacher prompts state it."""
    lines = [
        "Given a code snippet and a reviewer's comment on it, rate the severity of the reported "
        "problem as exactly one of: critical, major, minor, trivial."
    ]
    lines += [f"- {name}: {text}" for name, text in DEFINITIONS.items()]
    return "\n".join(lines)
