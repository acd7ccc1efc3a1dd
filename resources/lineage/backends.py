"""Where the lineage tables live: one embedded DuckDB file, or a DuckLake.

A DuckLake keeps the same tables, views and SQL: its catalog is a Postgres database (many
processes and machines write at once) or a local DuckDB file (one process at a time), its data
Parquet files under an S3 prefix or a local directory. The extensions come from PyPI
(`duckdb-extension-*`, built for the pinned duckdb) and are LOADed by file path: nothing is
downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import duckdb

LAKE = "lineage"  # prefix of a DuckLake's alias inside the process's DuckDB (USE lineage_<hash>)

# The Python package shipping each extension, and the file name DuckDB must LOAD it under (the
# postgres extension's entry point is named after `postgres_scanner`).
_EXTENSIONS = {
    "ducklake": ("duckdb_extension_ducklake", "ducklake"),
    "postgres": ("duckdb_extension_postgres", "postgres_scanner"),
    "httpfs": ("duckdb_extension_httpfs", "httpfs"),
}


def extension_path(name: str) -> Path:
    """The `.duckdb_extension` file of one PyPI extension package, under the name DuckDB
    expects (a symlink in a per-version directory where the package's name differs)."""
    package, load_as = _EXTENSIONS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"DuckDB extension package {package} is not installed (pyproject.toml)")
    root = Path(spec.submodule_search_locations[0]) / "extensions"
    found = sorted(root.glob(f"v{duckdb.__version__}/*.duckdb_extension"))
    if not found:
        shipped = sorted(p.parent.name for p in root.glob("*/*.duckdb_extension"))
        raise RuntimeError(
            f"{package} ships no extension for duckdb {duckdb.__version__} (it has {shipped}); "
            "pin both to the same version"
        )
    if found[0].stem == load_as:
        return found[0]
    links = Path(tempfile.gettempdir()) / f"flywheel-duckdb-{duckdb.__version__}-extensions"
    links.mkdir(parents=True, exist_ok=True)
    link = links / f"{load_as}.duckdb_extension"
    if not link.exists() or link.resolve() != found[0].resolve():
        staged = links / f".{load_as}.{os.getpid()}"
        staged.unlink(missing_ok=True)
        staged.symlink_to(found[0])
        os.replace(staged, link)  # atomic: processes starting together never see half a link
    return link


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class S3Access:
    """The S3 endpoint and credentials the DuckLake's data path is read and written with."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    def secret_sql(self, name: str, scope: str) -> str:
        """A DuckDB secret for the S3 paths under `scope` (one per lake: several may be open)."""
        options = {"TYPE": "s3", "SCOPE": scope}
        if self.access_key_id:
            options |= {"KEY_ID": self.access_key_id, "SECRET": self.secret_access_key or ""}
        if self.session_token:
            options["SESSION_TOKEN"] = self.session_token
        if self.region:
            options["REGION"] = self.region
        if self.endpoint_url:  # an S3-compatible server (seaweedfs, MinIO): path-style URLs
            url = urlparse(self.endpoint_url)
            options |= {"ENDPOINT": url.netloc, "URL_STYLE": "path"}
            options["USE_SSL"] = "true" if url.scheme == "https" else "false"
        body = ", ".join(
            f"{k} {v if k in ('TYPE', 'USE_SSL') else _quote(v)}" for k, v in options.items()
        )
        return f"CREATE OR REPLACE TEMPORARY SECRET {name} ({body})"


@dataclass(frozen=True)
class DuckDBFile:
    """The embedded default: one DuckDB file; one writing process at a time."""

    path: Path

    kind = "duckdb"
    keeps_handle = False  # release the file when idle, so other processes can take their turn

    @property
    def key(self) -> str:
        return str(self.path.resolve())

    def describe(self) -> str:
        return str(self.path)

    def open(self) -> duckdb.DuckDBPyConnection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(self.key)

    def close(self, con: duckdb.DuckDBPyConnection) -> None:
        con.close()

    def exists(self) -> bool:
        return self.path.is_file()


def catalog_uri(catalog: str) -> str:
    """`ducklake:...` for a Postgres URI / libpq string or a local catalog file."""
    if catalog.startswith(("postgresql://", "postgres://")):
        return f"ducklake:postgres:{catalog}"
    if catalog.startswith(("postgres:", "sqlite:")):
        return f"ducklake:{catalog}"
    return f"ducklake:{Path(catalog).resolve()}"


# A lake's data files are written once under names of their own and never changed in place
# (a compaction writes new files), so the process keeps what it read of them: the Parquet footers,
# the S3 objects' sizes and their bytes (DuckDB's external file cache), without re-validating
# them against S3 on every query (one request per file and query otherwise).
LAKE_READ_SETTINGS = {
    "enable_external_file_cache": "true",
    "validate_external_file_cache": "'NO_VALIDATION'",
    "parquet_metadata_cache": "true",
}

_INSTANCE_LOCK = threading.Lock()
_INSTANCE: list[duckdb.DuckDBPyConnection] = []
_LOADED: set[str] = set()


def lake_instance(*extensions: str) -> duckdb.DuckDBPyConnection:
    """The process's one in-memory DuckDB that DuckLakes are attached to, with `extensions`
    loaded. LOAD verifies an extension's signature (seconds for these ~40 MB files): once per
    process, not per connection."""
    with _INSTANCE_LOCK:
        if not _INSTANCE:
            _INSTANCE.append(duckdb.connect(config={"autoinstall_known_extensions": False}))
            for setting, value in LAKE_READ_SETTINGS.items():
                _INSTANCE[0].execute(f"SET {setting} = {value}")
        con = _INSTANCE[0]
        for name in extensions:
            if name not in _LOADED:
                con.execute(f"LOAD {_quote(str(extension_path(name)))}")
                _LOADED.add(name)
                if name == "httpfs":  # the S3 objects' sizes and times (a HEAD per read)
                    con.execute("SET enable_http_metadata_cache = true")
        return con


@dataclass(frozen=True)
class DuckLake:
    """A DuckLake: catalog in Postgres (or a local DuckDB file), data as Parquet under an S3
    prefix (or a local directory). Attached to the process's one DuckDB instance under an alias
    of its own (several lakes may be attached at once)."""

    catalog: str
    data_path: str
    s3: S3Access = S3Access()

    kind = "ducklake"

    @property
    def on_postgres(self) -> bool:
        return catalog_uri(self.catalog).startswith("ducklake:postgres:")

    @property
    def on_s3(self) -> bool:
        return self.data_path.startswith("s3://")

    @property
    def keeps_handle(self) -> bool:
        # A Postgres catalog takes any number of processes: keep the lake attached for the
        # process's life. A local catalog file is locked like any DuckDB file: detach it.
        return self.on_postgres

    @property
    def key(self) -> str:
        return f"{catalog_uri(self.catalog)}|{self.data_path}"

    @property
    def alias(self) -> str:
        return f"{LAKE}_{hashlib.sha256(self.key.encode()).hexdigest()[:10]}"

    def describe(self) -> str:
        where = "postgres" if self.on_postgres else self.catalog
        return f"DuckLake (catalog {where}, data {self.data_path})"

    def open(self) -> duckdb.DuckDBPyConnection:
        """Attach the lake to the process's instance; returns that instance's connection."""
        needed = ["ducklake"] + ["postgres"] * self.on_postgres + ["httpfs"] * self.on_s3
        con = lake_instance(*needed)
        data_path = self.data_path
        if self.on_s3:
            con.execute(self.s3.secret_sql(f"s3_{self.alias}", data_path.rstrip("/") + "/"))
        else:
            Path(data_path).mkdir(parents=True, exist_ok=True)
            data_path = str(Path(data_path).resolve())
        if not self.on_postgres:
            Path(self.catalog).resolve().parent.mkdir(parents=True, exist_ok=True)
        data_path = data_path.rstrip("/") + "/"
        con.execute(
            f"ATTACH IF NOT EXISTS {_quote(catalog_uri(self.catalog))} AS {self.alias} "
            f"(DATA_PATH {_quote(data_path)})"
        )
        return con

    def close(self, con: duckdb.DuckDBPyConnection) -> None:
        """Detach (releases a local catalog file for other processes); the instance stays."""
        con.execute(f"DETACH DATABASE IF EXISTS {self.alias}")

    def exists(self) -> bool:
        if not self.on_postgres:
            return Path(self.catalog).is_file()
        return True  # a Postgres catalog is created on first attach; its tables tell the rest
