"""Content-addressed artifact store: a directory goes in, a sha256-named reference comes out."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg
from pydantic import BaseModel

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_dir(path: Path) -> str:
    """Digest of a directory tree: sorted relative paths and the sha256 of each file."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"{path} holds no files")
    for file in files:
        rel = file.relative_to(path).as_posix()
        digest.update(f"{rel}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


class ArtifactRef(BaseModel):
    uri: str
    sha256: str
    size_bytes: int


class ArtifactStore(dg.ConfigurableResource, ABC):
    """Where adapters and other binary outputs live; the asset only keeps the reference."""

    @abstractmethod
    def put_dir(self, src: Path, kind: str) -> ArtifactRef:
        """Store a directory under its content hash; storing the same content twice is a no-op."""

    @abstractmethod
    def local_dir(self, ref: ArtifactRef) -> Path:
        """A local directory holding the artifact, verified against its sha256."""


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
