"""ReviewClient: what a code-review bot calls to rate a comment with the deployed student."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from flywheel_core.severity import SEVERITIES

Protocol = Literal["http", "grpc"]
DEFAULT_URLS = {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001"}
MODEL_NAME = "flywheel_student"


@dataclass
class ReviewResult:
    severity: str
    probabilities: dict[str, float] = field(default_factory=dict)
    explanation: str | None = None  # asked for with explain=True; None if the model has none


def _client_module(protocol: Protocol):
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise ValueError(f"protocol must be http or grpc, not {protocol!r}")
    return module


def _text_input(module, name: str, values: Sequence[str]):
    tensor = module.InferInput(name, [len(values), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[v.encode()] for v in values], dtype=np.object_))
    return tensor


class ReviewClient:
    """Rates (code, review comment) pairs on the Triton-served student over HTTP or gRPC."""

    def __init__(
        self,
        url: str | None = None,
        protocol: Protocol = "http",
        model_name: str = MODEL_NAME,
        timeout_s: float = 60.0,
    ) -> None:
        self.protocol = protocol
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._module = _client_module(protocol)
        self.url = url or DEFAULT_URLS[protocol]
        self._client = self._module.InferenceServerClient(self.url)
        self._io: dict[str, list[str]] | None = None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ReviewClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _metadata(self) -> dict:
        meta = self._client.get_model_metadata(self.model_name)
        if self.protocol == "grpc":
            from google.protobuf.json_format import MessageToDict

            meta = MessageToDict(meta, preserving_proto_field_name=True)
        return meta

    def served_versions(self) -> list[int]:
        """Versions of the model Triton has loaded (one, with the repository's pinned policy)."""
        return sorted(int(v) for v in self._metadata().get("versions", []))

    def _names(self, kind: str) -> list[str]:
        if self._io is None:
            meta = self._metadata()
            self._io = {k: [t["name"] for t in meta.get(k, [])] for k in ("inputs", "outputs")}
        return self._io[kind]

    def output_names(self) -> list[str]:
        return self._names("outputs")

    def can_explain(self) -> bool:
        """Whether the served model takes EXPLAIN (versions published before it do not)."""
        return "EXPLAIN" in self._names("inputs")

    def review_many(
        self, items: Sequence[tuple[str, str]], explain: bool = False
    ) -> list[ReviewResult]:
        """One request carrying all items (Triton may batch it with other clients' requests).
        `explain=True` also asks for an explanation of each item's severity (slower: generation).
        """
        codes, comments = zip(*items, strict=True) if items else ((), ())
        inputs = [
            _text_input(self._module, "CODE", codes),
            _text_input(self._module, "REVIEW", comments),
        ]
        if explain:
            if not self.can_explain():
                raise ValueError(f"{self.model_name} on {self.url} has no EXPLAIN input")
            flags = self._module.InferInput("EXPLAIN", [len(codes), 1], "BOOL")
            flags.set_data_from_numpy(np.ones((len(codes), 1), dtype=bool))
            inputs.append(flags)
        names = [n for n in self.output_names() if explain or n != "EXPLANATION"]
        outputs = [self._module.InferRequestedOutput(n) for n in names]
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        result = self._client.infer(self.model_name, inputs, outputs=outputs, **kwargs)
        return _results(result, names, len(items))

    def review(self, code: str, comment: str, explain: bool = False) -> ReviewResult:
        return self.review_many([(code, comment)], explain=explain)[0]


def _decode(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _results(result, names: list[str], count: int) -> list[ReviewResult]:
    severity = result.as_numpy("SEVERITY").reshape(count)
    probs = result.as_numpy("PROBABILITIES") if "PROBABILITIES" in names else None
    explanation = result.as_numpy("EXPLANATION") if "EXPLANATION" in names else None
    return [
        ReviewResult(
            severity=_decode(severity[i]),
            probabilities=(
                {s: float(p) for s, p in zip(SEVERITIES, probs[i], strict=True)}
                if probs is not None
                else {}
            ),
            explanation=_decode(explanation.reshape(count)[i]) if explanation is not None else None,
        )
        for i in range(count)
    ]
