"""Finding, preparing and running the real tritonserver.

Inside NVIDIA's container ``tritonserver`` is on PATH with its backends in
/opt/tritonserver/backends. Elsewhere it comes from the nvidia-pytriton wheel, which ships
the server, the Python backend and one backend stub per Python version; the stub matching
the running interpreter is put in place here, and the environment is set so the stub loads
this interpreter's libpython and site-packages (see docs/architecture.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .repository import cpu_batching, derive_repository
from .weights.layout import WEIGHTS_ENV

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "i2tt"


@dataclass
class ServerBinary:
    executable: Path
    backend_dir: Path
    cache_dir: Path | None
    library_path: list[str] = field(default_factory=list)


def find_tritonserver() -> ServerBinary:
    on_path = shutil.which("tritonserver")
    if on_path:
        root = Path(on_path).resolve().parent.parent  # /opt/tritonserver
        caches = root / "caches"
        return ServerBinary(Path(on_path), root / "backends", caches if caches.is_dir() else None)
    try:
        import pytriton
    except ImportError:
        raise RuntimeError("no tritonserver on PATH and nvidia-pytriton is not installed; "
                           "install the server package (pip install ./server)") from None
    wheel = Path(pytriton.__file__).parent / "tritonserver"
    return ServerBinary(wheel / "bin" / "tritonserver", _wheel_backends(wheel), wheel / "caches",
                        [str(Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs")])


def _wheel_backends(wheel: Path) -> Path:
    """A backends folder whose python backend has the stub for this interpreter."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    target = CACHE_DIR / "backends" / version / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source in [stub, *(wheel / "backends" / "python").glob("*.*")]:
        dest = target / source.name
        if not dest.exists() or dest.stat().st_size != source.stat().st_size:
            shutil.copy2(source, dest)
    return target.parent


def server_environment(binary: ServerBinary, weights: str | os.PathLike | None) -> dict[str, str]:
    env = dict(os.environ)
    # The stub runs the first python3 on PATH and must link this interpreter's libpython,
    # not the system's (a mismatch breaks C extensions inside the stub).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libdirs = [sysconfig.get_config_var("LIBDIR") or "", *binary.library_path,
               env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libdirs if p)
    if weights:
        env[WEIGHTS_ENV] = str(Path(weights).resolve())
    return env


PROFILES = ("auto", "gpu", "cpu")


def has_gpu() -> bool:
    """Whether the model processes will see a CUDA device (they decide with torch too)."""
    try:
        import torch
    except ImportError:
        return shutil.which("nvidia-smi") is not None
    return torch.cuda.is_available()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """One tritonserver process: start, wait until every model is ready, stop."""

    def __init__(self, model_repository: str | os.PathLike,
                 weights: str | os.PathLike | None = None, http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int = 8002, host: str = "0.0.0.0",
                 models: list[str] | None = None, cache_size: int = 256 * 1024 * 1024,
                 log_file: str | os.PathLike | None = None, extra_args: list[str] | None = None,
                 profile: str = "auto"):
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
        self.source_repository = Path(model_repository).resolve()
        self.model_repository = self.source_repository
        self.profile = profile
        self.weights = weights
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.host = host
        self.models = models
        self.cache_size = cache_size
        self.log_file = log_file
        self.extra_args = extra_args or []
        self.process: subprocess.Popen | None = None
        self._derived: str | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self, binary: ServerBinary) -> list[str]:
        cmd = [str(binary.executable), f"--model-repository={self.model_repository}",
               f"--backend-directory={binary.backend_dir}",
               f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
               f"--metrics-port={self.metrics_port}", f"--http-address={self.host}",
               f"--grpc-address={self.host}", "--strict-readiness=true"]
        if binary.cache_dir and self.cache_size:
            # Identical requests (same image bytes) are answered from memory.
            cmd += [f"--cache-directory={binary.cache_dir}",
                    f"--cache-config=local,size={self.cache_size}"]
        if self.models:
            cmd += ["--model-control-mode=explicit", *[f"--load-model={m}" for m in self.models]]
        return cmd + self.extra_args

    def resolved_profile(self) -> str:
        return self.profile if self.profile != "auto" else ("gpu" if has_gpu() else "cpu")

    def start(self, timeout: float = 300.0) -> "TritonServer":
        binary = find_tritonserver()
        if self.resolved_profile() == "cpu":
            # Served from a derived copy, so the shipped repository stays the GPU one.
            self._derived = tempfile.mkdtemp(prefix="i2tt-cpu-repository-")
            self.model_repository = derive_repository(self.source_repository,
                                                      Path(self._derived), cpu_batching)
        out = open(self.log_file, "ab") if self.log_file else None
        self.process = subprocess.Popen(self.command(binary),
                                        env=server_environment(binary, self.weights),
                                        stdout=out, stderr=subprocess.STDOUT if out else None,
                                        start_new_session=True)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def expected_models(self) -> list[str]:
        if self.models:
            return list(self.models)
        return sorted(p.parent.name for p in self.model_repository.glob("*/config.pbtxt"))

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = self.expected_models()
        while True:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self.process.returncode} "
                                   f"before it was ready{self._log_hint()}")
            pending = [m for m in pending if not self._ready(f"/v2/models/{m}/ready")]
            if not pending and self._ready("/v2/health/ready"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"models not ready after {timeout:.0f}s: {pending}{self._log_hint()}")
            time.sleep(0.5)

    def _log_hint(self) -> str:
        return f" (see {self.log_file})" if self.log_file else ""

    def _ready(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def statistics(self, model: str) -> dict:
        with urllib.request.urlopen(f"{self.http_url}/v2/models/{model}/stats", timeout=5) as r:
            return json.load(r)["model_stats"][0]

    def stop(self, timeout: float = 30.0) -> int | None:
        try:
            if not self.process or self.process.poll() is not None:
                return self.process.returncode if self.process else None
            self.process.send_signal(signal.SIGINT)  # tritonserver shuts down cleanly on SIGINT
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                return self.process.wait()
        finally:
            self.remove_derived()

    def remove_derived(self) -> None:
        if self._derived:
            shutil.rmtree(self._derived, ignore_errors=True)
            self._derived = None

    def wait(self) -> int:
        assert self.process is not None
        try:
            return self.process.wait()
        finally:
            self.remove_derived()

    def __enter__(self):
        return self.start() if self.process is None else self

    def __exit__(self, *exc):
        self.stop()
