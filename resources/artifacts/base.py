"""The artifact store interface: a directory goes in, a sha256-named reference comes out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg
from pydantic import BaseModel


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

    def adapter_dir(self, adapter: dict) -> Path:
        """The local, sha256-verified directory of an `adapters` (or deployment) row."""
        ref = ArtifactRef(uri=adapter["uri"], sha256=adapter["adapter_sha256"], size_bytes=0)
        return self.local_dir(ref)
