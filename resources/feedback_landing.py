"""Where reviewer-feedback files arrive: a local directory, or an S3 prefix in production."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import BaseModel

from flywheel_core.feedback.batches import SUFFIXES, is_feedback_file


class LandedFile(BaseModel):
    """One file in the landing zone; `signature` changes whenever the file does."""

    name: str  # relative to the landing zone, '/'-separated
    size: int
    mtime: float
    etag: str = ""

    @property
    def signature(self) -> str:
        return self.etag or f"{self.size}:{self.mtime:.6f}"


class FeedbackLanding(dg.ConfigurableResource, ABC):
    """The landing zone the feedback sensor watches; assets take this abstract type."""

    @abstractmethod
    def list_files(self) -> list[LandedFile]:
        """Every feedback file (.jsonl / .csv) in the zone, with size, mtime and etag."""

    @abstractmethod
    def read_bytes(self, name: str) -> bytes:
        """The raw bytes of one file, by its name as returned by `list_files`."""

    @abstractmethod
    def uri(self, name: str) -> str:
        """Where the file lives, for lineage and messages."""

    def legacy_batch(self, cycle: str) -> str | None:
        """A file named after the cycle (`<cycle>.jsonl` / `.csv`), for hand-added cycles."""
        names = {f.name for f in self.list_files()}
        return next((f"{cycle}{s}" for s in SUFFIXES if f"{cycle}{s}" in names), None)


class LocalFeedbackLanding(FeedbackLanding):
    """The embedded default: files under a local directory (sub-directories included)."""

    directory: str

    def list_files(self) -> list[LandedFile]:
        root = Path(self.directory)
        if not root.is_dir():
            return []
        files = []
        for path in root.rglob("*"):
            name = path.relative_to(root).as_posix()
            if is_feedback_file(name) and path.is_file():
                stat = path.stat()
                files.append(LandedFile(name=name, size=stat.st_size, mtime=stat.st_mtime))
        return sorted(files, key=lambda f: f.name)

    def _path(self, name: str) -> Path:
        root = Path(self.directory).resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"{name!r} lies outside the landing zone {root}")
        return path

    def read_bytes(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def uri(self, name: str) -> str:
        return str(self._path(name))


class S3FeedbackLanding(FeedbackLanding):
    """Production: objects under `s3://<bucket>/<prefix>/`."""

    s3: S3Resource
    bucket: str
    prefix: str = "feedback"

    def _key(self, name: str) -> str:
        return f"{self.prefix.strip('/')}/{name}" if self.prefix.strip("/") else name

    def list_files(self) -> list[LandedFile]:
        client = self.s3.get_client()
        base = self._key("")
        files = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base
        ):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(base) :]
                if is_feedback_file(name):
                    files.append(
                        LandedFile(
                            name=name,
                            size=obj["Size"],
                            mtime=obj["LastModified"].timestamp(),
                            etag=obj["ETag"].strip('"'),
                        )
                    )
        return sorted(files, key=lambda f: f.name)

    def read_bytes(self, name: str) -> bytes:
        obj = self.s3.get_client().get_object(Bucket=self.bucket, Key=self._key(name))
        return obj["Body"].read()

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"
