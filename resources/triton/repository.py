"""Publishes an adapter as a new numeric version of the student in a Triton model repository."""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import site
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from string import Template

import dagster as dg
from pydantic import BaseModel

from flywheel_core.hashing import sha256_dir

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "triton_models"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class PublishedVersion(BaseModel):
    model_name: str
    version: int
    path: str


_PINNED = re.compile(r"version_policy:\s*\{\s*specific:\s*\{\s*versions:\s*\[\s*(\d+)")


class TritonModelRepository(dg.ConfigurableResource):
    """A Triton model repository on disk, laid out from the template in `triton_models/`.

    `config.pbtxt` pins the one version that serves (`version_policy: { specific: ... }`); the
    deployer re-points it and asks Triton to reload. `dynamic_batching=False` renders the
    one-request-at-a-time variant the serving benchmark compares against.
    """

    repository_dir: str
    model_name: str = "flywheel_student"
    template: str = "flywheel_student"
    max_batch_size: int = 16
    dynamic_batching: bool = True
    max_queue_delay_us: int = 5000
    # Scoring inside one dynamic batch: length-sorted sub-batches of at most this many padded
    # tokens (None = the whole batch at once). On a CPU padding costs as much as real tokens.
    max_batch_tokens: int | None = 1024

    def model_dir(self) -> Path:
        return Path(self.repository_dir) / self.model_name

    def versions(self) -> list[int]:
        if not self.model_dir().is_dir():
            return []
        return sorted(int(p.name) for p in self.model_dir().iterdir() if p.name.isdigit())

    def config_path(self) -> Path:
        return self.model_dir() / "config.pbtxt"

    def render_config(self, version: int | None) -> str:
        """config.pbtxt text serving `version` (None: the newest published version)."""
        policy = (
            "{ latest: { num_versions: 1 } }"
            if version is None
            else f"{{ specific: {{ versions: [ {int(version)} ] }} }}"
        )
        delay = f"max_queue_delay_microseconds: {self.max_queue_delay_us}"
        batching = f"\ndynamic_batching {{\n  {delay}\n}}\n" if self.dynamic_batching else ""
        template = Template((TEMPLATES_DIR / self.template / "config.pbtxt").read_text())
        return template.substitute(
            model_name=self.model_name,
            max_batch_size=self.max_batch_size,
            dynamic_batching=batching,
            version_policy=policy,
        )

    def pin_version(self, version: int) -> None:
        """Point config.pbtxt at `version` (atomically; Triton reads it on the next load)."""
        if version not in self.versions():
            raise dg.Failure(f"{self.model_name} has no version {version} in {self.model_dir()}")
        _write_atomically(self.config_path(), self.render_config(version))

    def pinned_version(self) -> int | None:
        """The version config.pbtxt pins (None: no config yet, or not pinned)."""
        if not self.config_path().is_file():
            return None
        match = _PINNED.search(self.config_path().read_text())
        return int(match.group(1)) if match else None

    def deployment_info(self, version: int) -> dict:
        return json.loads((self.model_dir() / str(version) / "deployment.json").read_text())

    def verify_version(self, version: int) -> str:
        """Recompute the sha256 of a version's adapter; fail unless it matches deployment.json."""
        expected = self.deployment_info(version)["adapter_sha256"]
        actual = sha256_dir(self.model_dir() / str(version) / "adapter")
        if actual != expected:
            raise dg.Failure(
                f"{self.model_name} v{version}: adapter sha256 {actual} does not match the "
                f"recorded {expected}; refusing to serve it"
            )
        return actual

    def quarantine(self, version: int) -> Path:
        """Move a version that failed to go live out of Triton's sight (`.failed-<v>-<n>`)."""
        src = self.model_dir() / str(version)
        with self._locked():
            n = sum(1 for p in self.model_dir().glob(f".failed-{version}-*"))
            dst = self.model_dir() / f".failed-{version}-{n}"
            src.rename(dst)
        return dst

    def publish(
        self,
        adapter_dir: Path,
        adapter_sha256: str,
        base_model_path: Path,
        max_prompt_tokens: int,
        extra: dict | None = None,
    ) -> PublishedVersion:
        """Write `<model>/<next version>/` with the adapter, verified against its sha256.

        Safe across processes: everything is written into a staging folder of its own (never a
        numeric name, so Triton ignores it), and only then renamed into place under the
        repository's lock, where the version number is also allocated; a version folder is
        therefore complete from the moment it exists, and no two publishes get one number.
        """
        template_dir = TEMPLATES_DIR / self.template
        model_dir = self.model_dir()
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = model_dir / f".staging-{uuid.uuid4().hex}"
        try:
            shutil.copytree(adapter_dir, staging / "adapter")
            copied_sha = sha256_dir(staging / "adapter")
            if copied_sha != adapter_sha256:
                raise dg.Failure(
                    f"adapter copy sha256 {copied_sha} does not match the recorded "
                    f"{adapter_sha256}; nothing was published"
                )
            shutil.copy2(template_dir / "model.py", staging / "model.py")
            deployment = {
                "adapter_sha256": adapter_sha256,
                "base_model_path": str(base_model_path),
                "max_prompt_tokens": max_prompt_tokens,
                "batch_size": self.max_batch_size,
                "max_batch_tokens": self.max_batch_tokens,
                "python_paths": [str(PROJECT_ROOT), *site.getsitepackages()],
                **(extra or {}),
            }
            (staging / "deployment.json").write_text(json.dumps(deployment, indent=2))
            with self._locked():
                if not self.config_path().is_file():
                    _write_atomically(self.config_path(), self.render_config(None))
                version = self._next_version()
                final = model_dir / str(version)
                staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already unless something failed
        return PublishedVersion(model_name=self.model_name, version=version, path=str(final))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The repository's lock (an flock on `<model>/.publish.lock`), across processes."""
        self.model_dir().mkdir(parents=True, exist_ok=True)
        with open(self.model_dir() / ".publish.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _next_version(self) -> int:
        """Versions only grow: one that was quarantined is never reused."""
        failed = [int(p.name.split("-")[1]) for p in self.model_dir().glob(".failed-*-*")]
        return max([0, *self.versions(), *failed]) + 1


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file of this call's own, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
