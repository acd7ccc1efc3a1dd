"""Protects the serving pieces that need no server: gate, repository config, prod configs,
the backend's batching of severity and explanations."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from flywheel_core.hashing import sha256_dir
from resources.triton.production import (
    deployed_adapters,
    write_nim_peft_source,
    write_vllm_repository,
)
from resources.triton.repository import TEMPLATES_DIR, TritonModelRepository


@pytest.fixture()
def published(tmp_path: Path) -> TritonModelRepository:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    repo = TritonModelRepository(repository_dir=str(tmp_path / "repo"))
    for _ in range(2):
        repo.publish(adapter, sha256_dir(adapter), tmp_path / "base", 64)
    return repo


def test_repository_pins_one_version_and_parses_it_back(published: TritonModelRepository):
    """config.pbtxt starts on `latest 1`, then pins exactly the version the deployer chose."""
    assert published.versions() == [1, 2] and published.pinned_version() is None
    published.pin_version(1)
    text = published.config_path().read_text()
    assert published.pinned_version() == 1
    assert "specific: { versions: [ 1 ] }" in text and "dynamic_batching" in text
    with pytest.raises(dg.Failure):
        published.pin_version(7)


def test_tampered_version_fails_verification_and_quarantine_never_reuses_numbers(
    published: TritonModelRepository,
):
    """A changed adapter file is caught before load; a quarantined number is not reused."""
    (published.model_dir() / "2" / "adapter" / "adapter_config.json").write_text('{"r": 1}')
    with pytest.raises(dg.Failure, match="sha256"):
        published.verify_version(2)
    published.quarantine(2)
    assert published.versions() == [1] and published._next_version() == 3


def test_single_request_variant_has_no_dynamic_batching(tmp_path: Path):
    """The benchmark's one-at-a-time model differs only by the missing dynamic_batching block."""
    repo = TritonModelRepository(repository_dir=str(tmp_path), dynamic_batching=False)
    assert "dynamic_batching" not in repo.render_config(3)
    assert "max_batch_size: 16" in repo.render_config(3)


def test_vllm_and_nim_configs_name_every_deployed_adapter(tmp_path: Path):
    """The production variants list each deployed adapter by name, with LoRA enabled."""
    rows = []
    for cycle in ("bootstrap", "cycle-2"):
        path = tmp_path / "store" / cycle
        path.mkdir(parents=True)
        (path / "adapter_config.json").write_text("{}")
        rows.append({"cycle": cycle, "adapter_sha256": "x", "uri": path.as_uri()})
    adapters = deployed_adapters(rows)
    model = write_vllm_repository(
        tmp_path / "vllm", "meta-llama/Meta-Llama-3-8B-Instruct", adapters
    )
    engine = json.loads((model / "1" / "model.json").read_text())
    lora = json.loads((model / "1" / "multi_lora.json").read_text())
    assert engine["enable_lora"] and engine["max_loras"] == 2
    assert set(lora) == {"cycle-bootstrap", "cycle-cycle-2"}
    assert 'backend: "vllm"' in (model / "config.pbtxt").read_text()
    env = write_nim_peft_source(tmp_path / "nim", adapters)
    assert (Path(env["NIM_PEFT_SOURCE"]) / "cycle-bootstrap" / "adapter_config.json").is_file()


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _Response:
    def __init__(self, output_tensors=(), error=None) -> None:
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


@pytest.fixture()
def student_backend(monkeypatch):
    """The template's model.py, with the few backend utils it uses (they exist only inside
    Triton); scoring and generation record their calls instead of running a model."""
    utils = types.ModuleType("triton_python_backend_utils")
    utils.Tensor, utils.InferenceResponse, utils.TritonError = _Tensor, _Response, str
    utils.get_input_tensor_by_name = lambda request, name: request.get(name)
    monkeypatch.setitem(sys.modules, utils.__name__, utils)
    path = TEMPLATES_DIR / "flywheel_student" / "model.py"
    spec = importlib.util.spec_from_file_location("flywheel_student_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    backend = module.TritonPythonModel()  # what initialize() sets, without loading a model
    backend.model = backend.tokenizer = None
    backend.batch_size, backend.max_prompt_tokens, backend.max_batch_tokens = 16, 64, 2048
    backend.explanation_max_prompt_tokens, backend.explanation_max_new_tokens = 320, 12
    backend.calls = []

    def score(model, tokenizer, items, **kwargs):
        backend.calls.append(("score", list(items)))
        probs = {"critical": 0.1, "major": 0.2, "minor": 0.3, "trivial": 0.4}
        return [{"severity": "trivial", "probs": probs} for _ in items]

    def explain(model, tokenizer, items, **kwargs):
        backend.calls.append(("explain", list(items), kwargs["max_new_tokens"]))
        return [f"why {code}" for code, _, _ in items]

    backend._score, backend._explain = score, explain
    return backend


def _request(codes: list[str], explain: list[bool] | None = None) -> dict:
    def text(values):
        return _Tensor("", np.array([[v.encode()] for v in values], dtype=np.object_))

    request = {"CODE": text(codes), "REVIEW": text([f"review of {c}" for c in codes])}
    if explain is not None:
        request["EXPLAIN"] = _Tensor("", np.array([[f] for f in explain], dtype=bool))
    return request


def test_backend_scores_a_batch_once_and_explains_only_the_rows_that_asked(student_backend):
    """Three requests in one dynamic batch: one scoring pass; EXPLANATION is b"" unless asked."""
    requests = [_request(["a", "b"], [False, True]), _request(["c"]), _request(["d"], [True])]
    responses = student_backend.execute(requests)
    assert [c[0] for c in student_backend.calls] == ["score", "explain"]
    assert student_backend.calls[1] == (
        "explain",
        [("b", "review of b", "trivial"), ("d", "review of d", "trivial")],
        12,
    )
    texts = [r.outputs["EXPLANATION"].reshape(-1).tolist() for r in responses]
    assert texts == [[b"", b"why b"], [b""], [b"why d"]]
    assert responses[0].outputs["SEVERITY"].tolist() == [[b"trivial"], [b"trivial"]]
    assert responses[2].outputs["PROBABILITIES"].shape == (1, 4)


def test_backend_generation_failure_fails_only_the_requests_that_asked(student_backend):
    """A failed generation errors the requests that asked for an explanation; others answer."""

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    student_backend._explain = broken
    plain, asked = student_backend.execute([_request(["a"]), _request(["b"], [True])])
    assert plain.error is None and plain.outputs["SEVERITY"].tolist() == [[b"trivial"]]
    assert asked.error == "explanation failed: out of memory" and not asked.outputs
