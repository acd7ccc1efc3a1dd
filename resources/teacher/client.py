"""One chat completion against an OpenAI-compatible endpoint, with our own retry loop.

The openai client is built with `max_retries=0` so that every retry is ours and counted:
429, 5xx, timeouts and dropped connections are retried with exponential backoff and full
jitter, honouring `Retry-After` / `retry-after-ms` when the server sends them. A 400 on a
JSON-schema `response_format` switches the call to prompt-only output (the reply is parsed
either way) and records which mode was used.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import openai

log = logging.getLogger(__name__)

RETRYABLE = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APITimeoutError,
    openai.APIConnectionError,
)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    base_s: float = 1.0
    max_s: float = 60.0


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    retries: int
    output_mode: str  # json_schema | prompt
    finish_reason: str | None


class CallFailed(Exception):
    """The call gave up; `retries` says how many times it tried again first."""

    def __init__(self, message: str, retries: int) -> None:
        super().__init__(message)
        self.retries = retries


def retry_after_s(exc: Exception) -> float | None:
    """Seconds the server asked us to wait (Retry-After as seconds or an HTTP date)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    if ms := headers.get("retry-after-ms"):
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def backoff_s(attempt: int, policy: RetryPolicy, server_hint: float | None) -> float:
    """Full jitter on base * 2^attempt, capped; never shorter than the server's Retry-After."""
    jittered = random.uniform(0, min(policy.max_s, policy.base_s * 2**attempt))
    return min(policy.max_s, max(jittered, server_hint or 0.0))


def complete(
    client: openai.OpenAI,
    request: dict,
    schema: dict | None,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> Completion:
    """Send one chat completion; raises CallFailed (never an openai error) when it gives up."""
    mode = "json_schema" if schema else "prompt"
    retries = 0
    while True:
        kwargs = dict(request)
        if mode == "json_schema":
            kwargs["response_format"] = {"type": "json_schema", "json_schema": schema}
        try:
            response = client.chat.completions.create(**kwargs)
        except openai.BadRequestError as exc:
            if mode == "json_schema":
                log.warning("endpoint rejected json_schema output (%s); parsing the prompt", exc)
                mode = "prompt"
                continue
            raise CallFailed(f"bad request: {exc}", retries) from exc
        except RETRYABLE as exc:
            if retries >= policy.max_retries:
                raise CallFailed(f"gave up after {retries} retries: {exc!r}", retries) from exc
            delay = backoff_s(retries, policy, retry_after_s(exc))
            retries += 1
            log.info("teacher call failed (%r); retry %d in %.2fs", exc, retries, delay)
            sleep(delay)
            continue
        except openai.OpenAIError as exc:
            raise CallFailed(f"{type(exc).__name__}: {exc}", retries) from exc
        return _completion(response, retries, mode)


def _completion(response: object, retries: int, mode: str) -> Completion:
    choices = getattr(response, "choices", None) or []
    message = choices[0].message if choices else None
    usage = getattr(response, "usage", None)
    return Completion(
        text=(getattr(message, "content", None) or "") if message else "",
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        retries=retries,
        output_mode=mode,
        finish_reason=choices[0].finish_reason if choices else None,
    )
