"""Triton Python-backend model: the flywheel student (base model + the version's LoRA adapter).

Each numeric version folder holds this file, the adapter (`adapter/`) and `deployment.json`,
which names the base model directory and the adapter's sha256. The backend stub ignores
PYTHONPATH, so `deployment.json` also lists the directories to put on `sys.path`.

One model instance per loaded version holds the base weights with the adapter merged in; the
repository's config pins a single version, so one copy of the base weights is in memory. A
version whose adapter does not match its recorded sha256 refuses to load.

A request may set the optional EXPLAIN input (one bool per row): after the one scoring pass over
every row of the dynamic batch, the rows that asked get an explanation of their predicted
severity (greedy generation); EXPLANATION is b"" for the rows that did not ask.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Triton Python backend

LABELS = ("critical", "major", "minor", "trivial")


def _decode(tensor) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.reshape(-1)]


def _explain_flags(request, rows: int) -> list[bool]:
    """EXPLAIN per row (Triton checks its batch size equals CODE's); absent means False."""
    tensor = pb_utils.get_input_tensor_by_name(request, "EXPLAIN")
    if tensor is None:
        return [False] * rows
    return [bool(v) for v in tensor.as_numpy().reshape(-1)]


def _check_numpy(python_paths: list[str]) -> None:
    """numpy was imported (by the backend utils) before `python_paths` joined sys.path: it must
    be the deployment environment's. The stub's interpreter finds its prefix through `python3`
    on PATH; another interpreter's numpy (numpy 2 in pyenv's base) is misread by the stub's
    pybind11 and every BYTES input arrives corrupted, crashing the stub on the first request."""
    site_dirs = [Path(p).resolve() for p in python_paths if "site-packages" in p]
    numpy_dir = Path(np.__file__).resolve().parent
    if site_dirs and not any(numpy_dir.is_relative_to(d) for d in site_dirs):
        raise RuntimeError(
            f"the Python backend stub imported numpy {np.__version__} from {numpy_dir}, not from "
            f"the deployment's environment {[str(d) for d in site_dirs]}; start tritonserver with "
            "resources.triton.server.server_env() (the environment's bin dir first on PATH)"
        )


class TritonPythonModel:
    def initialize(self, args):
        version_dir = Path(args["model_repository"]) / args["model_version"]
        deployment = json.loads((version_dir / "deployment.json").read_text())
        python_paths = deployment.get("python_paths", [])
        _check_numpy(python_paths)
        for path in reversed(python_paths):
            if path not in sys.path:
                sys.path.insert(0, path)
        import torch

        from flywheel_core.hashing import sha256_dir
        from flywheel_core.ml.base_model import load_model_and_tokenizer
        from flywheel_core.ml.explaining import DEFAULT_MAX_PROMPT_TOKENS, generate_explanations
        from flywheel_core.ml.explanation_prompt import DEFAULT_MAX_EXPLANATION_TOKENS
        from flywheel_core.ml.scoring import score_severity

        actual = sha256_dir(version_dir / "adapter")
        if actual != deployment["adapter_sha256"]:
            raise ValueError(
                f"adapter sha256 {actual} != recorded {deployment['adapter_sha256']}: not loading"
            )
        torch.set_num_threads(int(deployment.get("num_threads", 1)))
        self._score = score_severity
        self._explain = generate_explanations
        self.max_prompt_tokens = int(deployment.get("max_prompt_tokens", 256))
        self.batch_size = int(deployment.get("batch_size", 16))
        budget = deployment.get("max_batch_tokens")
        self.max_batch_tokens = int(budget) if budget else None
        self.explanation_max_prompt_tokens = int(
            deployment.get("explanation_max_prompt_tokens", DEFAULT_MAX_PROMPT_TOKENS)
        )
        self.explanation_max_new_tokens = int(
            deployment.get("explanation_max_new_tokens", DEFAULT_MAX_EXPLANATION_TOKENS)
        )
        self.model, self.tokenizer = load_model_and_tokenizer(
            Path(deployment["base_model_path"]),
            adapter_dir=version_dir / "adapter",
            dtype=getattr(torch, deployment.get("dtype", "float32")),
        )

    def execute(self, requests):
        sizes, items, wanted = [], [], []
        for request in requests:
            codes = _decode(pb_utils.get_input_tensor_by_name(request, "CODE").as_numpy())
            reviews = _decode(pb_utils.get_input_tensor_by_name(request, "REVIEW").as_numpy())
            sizes.append(len(codes))
            items.extend(zip(codes, reviews, strict=True))
            wanted.extend(_explain_flags(request, len(codes)))
        try:
            results = self._score(
                self.model,
                self.tokenizer,
                items,
                batch_size=self.batch_size,
                max_prompt_tokens=self.max_prompt_tokens,
                max_batch_tokens=self.max_batch_tokens,
            )
        except Exception as exc:  # noqa: BLE001 - every request gets the error, the model lives
            error = pb_utils.TritonError(f"scoring failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        explanations, explain_error = self._explanations(items, results, wanted)
        responses, start = [], 0
        for size in sizes:
            rows = range(start, start + size)
            start += size
            if explain_error is not None and any(wanted[i] for i in rows):
                responses.append(pb_utils.InferenceResponse(error=explain_error))
                continue
            chunk = [results[i] for i in rows]
            severity = np.array([[r["severity"].encode()] for r in chunk], dtype=np.object_)
            probs = np.array([[r["probs"][c] for c in LABELS] for r in chunk], dtype=np.float32)
            texts = np.array([[explanations[i].encode()] for i in rows], dtype=np.object_)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("SEVERITY", severity),
                        pb_utils.Tensor("PROBABILITIES", probs),
                        pb_utils.Tensor("EXPLANATION", texts),
                    ]
                )
            )
        return responses

    def _explanations(self, items, results, wanted):
        """One explanation per row ("" where not asked), and the error if generation failed."""
        explanations = [""] * len(items)
        rows = [i for i, flag in enumerate(wanted) if flag]
        if not rows:
            return explanations, None
        try:
            texts = self._explain(
                self.model,
                self.tokenizer,
                [(*items[i], results[i]["severity"]) for i in rows],
                batch_size=self.batch_size,
                max_prompt_tokens=self.explanation_max_prompt_tokens,
                max_new_tokens=self.explanation_max_new_tokens,
            )
        except Exception as exc:  # noqa: BLE001 - the rows that asked get the error
            return explanations, pb_utils.TritonError(f"explanation failed: {exc}")
        for i, text in zip(rows, texts, strict=True):
            explanations[i] = text
        return explanations, None
