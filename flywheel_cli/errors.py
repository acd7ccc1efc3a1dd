"""User errors of the `flywheel` command: one clear line on stderr and exit code 2."""

from __future__ import annotations

import dagster as dg
from pydantic import ValidationError


class UserError(Exception):
    """A mistake in what the user asked for (a path, a version, a setting), not a bug."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """What counts as the user's mistake: a bad `--set` (ValueError, ValidationError), a missing
    file, an unknown version or refused adapter (dagster.Failure), no server to talk to."""
    types: list[type[BaseException]] = [
        UserError,
        ValueError,
        ValidationError,
        FileNotFoundError,
        ConnectionError,
        TimeoutError,
        dg.Failure,
    ]
    try:
        from tritonclient.utils import InferenceServerException

        types.append(InferenceServerException)
    except ImportError:
        pass
    return tuple(types)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "description", None) or exc).split())
    return text or type(exc).__name__
