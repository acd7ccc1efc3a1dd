"""The Triton server bundled in PyPI `nvidia-pytriton`, run on loopback from the flywheel home.

Traps handled here (see DESIGN.md): the Python-backend stub links libpython 3.11 and the bundled
libraries, so `LD_LIBRARY_PATH` gets the interpreter's lib dir and `nvidia_pytriton.libs`; the
stub for this Python version is copied next to the backend library; the server runs with its
own working directory (a `triton/` folder in the cwd would shadow the `triton` package).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

STATE_DIR = "triton_server"
READY_POLL_S = 0.5


def pytriton_dist() -> Path:
    """The `pytriton/tritonserver` folder of the installed wheel (binary, backends, stubs)."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nvidia-pytriton is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver: libpython's dir and the wheel's bundled libraries first."""
    env = dict(os.environ if base is None else base)
    bundled = pytriton_dist().parents[1] / "nvidia_pytriton.libs"
    libs = [sysconfig.get_config_var("LIBDIR"), str(bundled)]
    previous = env.get("LD_LIBRARY_PATH")
    env["LD_LIBRARY_PATH"] = ":".join([*libs, *([previous] if previous else [])])
    # The stub embeds libpython without setting a program name, so its interpreter finds its
    # prefix by looking `python3` up on PATH. With this interpreter's bin dir not first (venv not
    # activated, pyenv shims first) it becomes the base interpreter, and the stub imports that
    # prefix's site-packages: there numpy 2, whose dtype layout the stub's pybind11 (numpy 1 ABI)
    # misreads (itemsize 0: every BYTES input arrives as its first byte repeated).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), *_path_entries(env)])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _path_entries(env: Mapping[str, str]) -> list[str]:
    own = str(Path(sys.executable).parent)
    return [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != own]


def prepare_backends(target: Path) -> Path:
    """`<target>/python/` with the Python backend and the stub for this interpreter."""
    dist = pytriton_dist()
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    stubs = dist / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = {
        "libtriton_python.so": dist / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": dist / "backends/python/triton_python_backend_utils.py",
        "triton_python_backend_stub": stubs / "triton_python_backend_stub",
    }
    for name, src in sources.items():
        dst = python_dir / name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            shutil.copy2(src, dst)
    return target


def _alive(pid: int) -> bool:
    """A live (not zombie) process whose command is tritonserver (or still being exec'd)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state != "Z" and (not cmdline or b"tritonserver" in cmdline)


class TritonServer(dg.ConfigurableResource):
    """A tritonserver process in explicit model-control mode, serving `<home>/triton_repository`.

    `required`: when False (the embedded default), deployment without a running server publishes
    the version and records it as not served; when True, deployment fails instead.
    """

    home: str
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    required: bool = False
    startup_timeout_s: float = 180.0
    log_verbose: int = 0

    @property
    def state_dir(self) -> Path:
        return Path(self.home) / STATE_DIR

    @property
    def repository_dir(self) -> Path:
        return Path(self.home) / "triton_repository"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "server.json"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "server.log"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def command(self) -> list[str]:
        return [
            str(pytriton_dist() / "bin" / "tritonserver"),
            f"--model-repository={self.repository_dir}",
            "--model-control-mode=explicit",
            f"--backend-directory={prepare_backends(self.state_dir / 'backends')}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--log-verbose={self.log_verbose}",
            "--exit-on-error=false",
        ]

    def recorded_pid(self) -> int | None:
        """The pid in `<home>/triton_server/server.json` if that process still runs."""
        try:
            pid = int(json.loads(self.pid_file.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None
        return pid if _alive(pid) else None

    def is_ready(self) -> bool:
        """The server answers `is_server_ready` over HTTP."""
        import tritonclient.http as httpclient

        try:
            return bool(httpclient.InferenceServerClient(self.http_url).is_server_ready())
        except Exception:  # noqa: BLE001 - connection refused, timeouts: all mean "not ready"
            return False

    def is_live(self) -> bool:
        """The server answers `is_server_live` (ready may be false while a version unloads)."""
        import tritonclient.http as httpclient

        try:
            return bool(httpclient.InferenceServerClient(self.http_url).is_server_live())
        except Exception:  # noqa: BLE001 - connection refused, timeouts: all mean "not live"
            return False

    def is_running(self) -> bool:
        """Our recorded process runs and answers (a server on the port that we did not start
        from this home does not count)."""
        return self.recorded_pid() is not None and self.is_live()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def start(self) -> int:
        """Start the server (unless ours already runs) and wait until it is ready; its pid."""
        pid = self.recorded_pid()
        if pid is None:
            pid = self._spawn()
        self.wait_ready(pid)
        return pid

    def _spawn(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.repository_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                self.command(),
                cwd=self.state_dir,
                env=server_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals the stubs too
            )
        record = {"pid": process.pid, "http": self.http_url, "grpc": self.grpc_url}
        self.pid_file.write_text(json.dumps(record))
        return process.pid

    def wait_ready(self, pid: int) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                raise RuntimeError(f"tritonserver (pid {pid}) exited:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(READY_POLL_S)
        raise TimeoutError(
            f"tritonserver (pid {pid}) not ready on {self.http_url} after "
            f"{self.startup_timeout_s:.0f}s:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM the server's process group, SIGKILL after the timeout; False if none ran."""
        pid = self.recorded_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> dict:
        pid = self.recorded_pid()
        return {
            "pid": pid,
            "live": pid is not None and self.is_live(),
            "ready": pid is not None and self.is_ready(),
            "http": self.http_url,
            "grpc": self.grpc_url,
            "repository": str(self.repository_dir),
            "log": str(self.log_file),
        }


def server_from_env(env: Mapping[str, str], home: Path) -> TritonServer:
    """FLYWHEEL_TRITON_HTTP_PORT / _GRPC_PORT / _METRICS_PORT (8000-8002) and
    FLYWHEEL_TRITON_REQUIRED=1 (deployment fails without a running server)."""
    return TritonServer(
        home=str(home),
        http_port=int(env.get("FLYWHEEL_TRITON_HTTP_PORT", 8000)),
        grpc_port=int(env.get("FLYWHEEL_TRITON_GRPC_PORT", 8001)),
        metrics_port=int(env.get("FLYWHEEL_TRITON_METRICS_PORT", 8002)),
        required=env.get("FLYWHEEL_TRITON_REQUIRED", "0").lower() in ("1", "true", "yes"),
    )
