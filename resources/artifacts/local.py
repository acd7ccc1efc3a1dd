"""The embedded artifact store: content-addressed directories under the flywheel home."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import dagster as dg

from flywheel_core.hashing import sha256_dir
from resources.artifacts.base import ArtifactRef, ArtifactStore


class LocalArtifactStore(ArtifactStore):
    """The embedded default: `<root>/<kind>/<sha256>/`."""

    root: str

    def put_dir(self, src: Path, kind: str) -> ArtifactRef:
        sha = sha256_dir(src)
        dest = Path(self.root) / kind / sha
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{sha[:12]}-"))
            shutil.copytree(src, staging, dirs_exist_ok=True)
            try:
                staging.rename(dest)
            except OSError:  # a concurrent writer stored the same content first
                shutil.rmtree(staging, ignore_errors=True)
        size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
        return ArtifactRef(uri=dest.resolve().as_uri(), sha256=sha, size_bytes=size)

    def local_dir(self, ref: ArtifactRef) -> Path:
        path = Path(ref.uri.removeprefix("file://"))
        if not path.is_dir():
            raise dg.Failure(f"artifact {ref.uri} is missing from the local artifact store")
        actual = sha256_dir(path)
        if actual != ref.sha256:
            raise dg.Failure(
                f"artifact {ref.uri} is corrupted: sha256 {actual} != recorded {ref.sha256}"
            )
        return path
