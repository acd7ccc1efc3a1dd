"""Production artifact store: content-addressed objects `<prefix>/<kind>/<sha256>/<file>` on S3."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from flywheel_core.hashing import sha256_dir
from resources.artifacts.base import ArtifactRef, ArtifactStore


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key/prefix` -> (bucket, key/prefix)."""
    if not uri.startswith("s3://"):
        raise dg.Failure(f"artifact {uri} is not an S3 URI; was it stored by another store?")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key.rstrip("/")


class S3ArtifactStore(ArtifactStore):
    """Uploads each file of an artifact directory once; downloads into a verified local cache."""

    s3: S3Resource
    bucket: str
    prefix: str = "artifacts"
    cache_dir: str  # local copies for training and serving; never the source of truth

    def _base(self, kind: str, sha: str) -> str:
        parts = [p for p in (self.prefix.strip("/"), kind, sha) if p]
        return "/".join(parts)

    def _objects(self, base: str) -> dict[str, int]:
        """Relative path -> size of the objects under `base/`."""
        found: dict[str, int] = {}
        pages = self.s3.get_client().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket, Prefix=f"{base}/"):
            for obj in page.get("Contents", []):
                found[obj["Key"][len(base) + 1 :]] = obj["Size"]
        return found

    def put_dir(self, src: Path, kind: str) -> ArtifactRef:
        sha = sha256_dir(src)
        base = self._base(kind, sha)
        stored = self._objects(base)
        client = self.s3.get_client()
        for file in sorted(p for p in Path(src).rglob("*") if p.is_file()):
            rel = file.relative_to(src).as_posix()
            if stored.get(rel) != file.stat().st_size:
                client.upload_file(str(file), self.bucket, f"{base}/{rel}")
                stored[rel] = file.stat().st_size
        uri = f"s3://{self.bucket}/{base}"
        return ArtifactRef(uri=uri, sha256=sha, size_bytes=sum(stored.values()))

    def local_dir(self, ref: ArtifactRef) -> Path:
        bucket, base = split_uri(ref.uri)
        dest = Path(self.cache_dir) / base
        if dest.is_dir() and sha256_dir(dest) == ref.sha256:
            return dest
        staging = self._download(bucket, base, dest.parent)
        actual = sha256_dir(staging)
        if actual != ref.sha256:
            shutil.rmtree(staging, ignore_errors=True)
            raise dg.Failure(
                f"artifact {ref.uri} is corrupted: sha256 {actual} != recorded {ref.sha256}"
            )
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
        return dest

    def _download(self, bucket: str, base: str, parent: Path) -> Path:
        objects = self._objects(base) if bucket == self.bucket else {}
        if not objects:
            raise dg.Failure(f"artifact s3://{bucket}/{base} is missing from the artifact store")
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=".download-"))
        client = self.s3.get_client()
        for rel in objects:
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, f"{base}/{rel}", str(target))
        return staging
