"""Publishes an adapter as a new numeric version of the student in a Triton model repository."""

from __future__ import annotations

import json
import shutil
import site
from pathlib import Path
from string import Template

import dagster as dg
from pydantic import BaseModel

from resources.artifact_store import sha256_dir

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "triton_models"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class PublishedVersion(BaseModel):
    model_name: str
    version: int
    path: str


class TritonModelRepository(dg.ConfigurableResource):
    """A Triton model repository on disk, laid out from the template in `triton_models/`."""

    repository_dir: str
    model_name: str = "flywheel_student"
    template: str = "flywheel_student"

    def model_dir(self) -> Path:
        return Path(self.repository_dir) / self.model_name

    def versions(self) -> list[int]:
        if not self.model_dir().is_dir():
            return []
        return sorted(int(p.name) for p in self.model_dir().iterdir() if p.name.isdigit())

    def publish(
        self,
        adapter_dir: Path,
        adapter_sha256: str,
        base_model_path: Path,
        max_prompt_tokens: int,
        extra: dict | None = None,
    ) -> PublishedVersion:
        """Write `<model>/<next version>/` with the adapter, verified against its sha256."""
        template_dir = TEMPLATES_DIR / self.template
        model_dir = self.model_dir()
        model_dir.mkdir(parents=True, exist_ok=True)
        config = Template((template_dir / "config.pbtxt").read_text())
        (model_dir / "config.pbtxt").write_text(config.substitute(model_name=self.model_name))
        version = (self.versions() or [0])[-1] + 1
        staging = model_dir / f".staging-{version}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(adapter_dir, staging / "adapter")
        copied_sha = sha256_dir(staging / "adapter")
        if copied_sha != adapter_sha256:
            shutil.rmtree(staging, ignore_errors=True)
            raise dg.Failure(
                f"adapter copy sha256 {copied_sha} does not match the recorded {adapter_sha256}; "
                "nothing was published"
            )
        shutil.copy2(template_dir / "model.py", staging / "model.py")
        deployment = {
            "adapter_sha256": adapter_sha256,
            "base_model_path": str(base_model_path),
            "max_prompt_tokens": max_prompt_tokens,
            "python_paths": [str(PROJECT_ROOT), *site.getsitepackages()],
            **(extra or {}),
        }
        (staging / "deployment.json").write_text(json.dumps(deployment, indent=2))
        final = model_dir / str(version)
        staging.rename(final)
        return PublishedVersion(model_name=self.model_name, version=version, path=str(final))
