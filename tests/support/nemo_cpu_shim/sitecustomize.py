"""TEST-ONLY shim: lets nemo_automodel 0.7.0's stock LLM fine-tune recipe run on a CPU.

Never on the production path: the tests (and the CPU benchmark) put this directory on the
NeMo venv's PYTHONPATH through a wrapper interpreter (``tests/support/nemo_venv.py``); the
GPU image and a GPU workstation's venv never see it. Python imports ``sitecustomize`` at
start-up in every process of the run (the Pipes entry point and each torchrun worker).

On a machine with CUDA it does nothing. Without CUDA, nemo_automodel 0.7.0 hard-codes three
things that fail on a CPU-only torch build:

- ``TrainFinetuneRecipeForNextTokenPrediction.setup`` calls ``torch.cuda.reset_peak_memory_stats()``
  and the step logging ``torch.cuda.max_memory_allocated()``: no-ops / 0 here;
- the model loader (``nemo_automodel._transformers.auto_model`` / ``model_init``) builds
  ``torch.device("cuda", torch.cuda.current_device())`` and ``device_map={"": current_device()}``:
  inside those modules (only), ``torch`` is replaced by a view that maps CUDA devices to CPU;
- the ``automodel`` CLI refuses a machine without CUDA: the flywheel launches the recipe with
  ``torchrun`` instead, so nothing is patched for it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

import torch

_LOADER_MODULES = (
    "nemo_automodel._transformers.auto_model",
    "nemo_automodel._transformers.model_init",
)


class _DeviceMeta(type):
    """``torch.device`` with CUDA mapped to CPU; isinstance checks still see torch.device."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, torch.device)

    def __call__(cls, kind, index=None):  # noqa: N805
        if isinstance(kind, torch.device):
            kind = kind.type
        if str(kind).startswith("cuda"):
            return torch.device("cpu")
        return torch.device(kind) if index is None else torch.device(kind, index)


class _CpuDevice(metaclass=_DeviceMeta):
    pass


class _CpuCuda(types.ModuleType):
    """``torch.cuda`` where the current device is the CPU."""

    def __init__(self) -> None:
        super().__init__("torch.cuda")

    def __getattr__(self, name: str):
        return getattr(torch.cuda, name)

    @staticmethod
    def current_device() -> str:
        return "cpu"


class _CpuTorch(types.ModuleType):
    """The ``torch`` a patched loader module sees."""

    def __init__(self) -> None:
        super().__init__("torch")
        self.device = _CpuDevice
        self.cuda = _CpuCuda()

    def __getattr__(self, name: str):
        return getattr(torch, name)


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _LOADER_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            module.torch = _CpuTorch()

        spec.loader.exec_module = exec_module
        return spec


if not torch.cuda.is_available():
    torch.cuda.reset_peak_memory_stats = lambda *args, **kwargs: None
    torch.cuda.max_memory_allocated = lambda *args, **kwargs: 0
    sys.meta_path.insert(0, _PatchAfterImport())
