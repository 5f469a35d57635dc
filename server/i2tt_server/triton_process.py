"""One tritonserver process made from ``ServeOptions``: its command line and addresses, its
HTTP API, starting it, waiting until its models are ready, and ending it."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from . import shm
from .model_processes import stub_processes
from .repository import chain, cpu_batching, derive_repository, set_scheduling
from .serve_options import ServeOptions, triton_command
from .triton_binary import ServerBinary, server_environment
from .triton_http import TritonHttp

# Seconds a stop may take beyond the exit timeout: tritonserver unloading what is left.
STOP_MARGIN = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonProcess:
    """The process itself; ``TritonServer`` (launcher.py) supervises it.

    Its repository API (load, unload) is restricted to a header whose value only this
    object knows (``api`` sends it), so no client can use it."""

    def __init__(self, options: ServeOptions):
        self.options = options
        self.model_repository = options.model_repository.path.resolve()  # the one served
        self.process: subprocess.Popen | None = None
        # set (e.g. by a signal handler) to make start() give up and wait() drain and stop
        self.stop_requested = threading.Event()
        self._derived: str | None = None
        # Triton has no HTTPS: with TLS its HTTP endpoint listens on loopback only and a
        # TLS terminator in this process serves HTTPS on the public port.
        self._triton_http_port = free_port() if options.tls else options.http_port
        self._control_secret = secrets.token_urlsafe(32)
        self.api = TritonHttp(self.http_url, self._control_secret, options.api_key)

    @property
    def grpc_port(self) -> int:
        return self.options.grpc_port

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.options.grpc_port}"

    @property
    def http_url(self) -> str:
        """Plain HTTP to the server itself (loopback; behind the TLS terminator with TLS)."""
        return f"http://127.0.0.1:{self._triton_http_port}"

    @property
    def log_file(self):
        return self.options.log_file

    def command(self, binary: ServerBinary) -> list[str]:
        return triton_command(self.options, binary, self.model_repository,
                              self._control_secret, self._triton_http_port)

    def expected_models(self) -> list[str]:
        return self.options.served_models()

    def resolved_profile(self) -> str:
        return self.options.resolved_profile()

    def ready(self, model: str | None = None) -> bool:
        """The server's readiness (every model ready), or one model's."""
        return self.api.ready(model)

    def statistics(self, model: str) -> dict:
        return self.api.statistics(model)

    def model_processes(self, model: str) -> list[int]:
        return [pid for pid, name in stub_processes(self.process.pid).items() if name == model]

    def launch(self, binary: ServerBinary) -> None:
        """Start the process (not waiting for it)."""
        edits = [set_scheduling(self.options.scheduling)] \
            if self.options.scheduling != "config" else []
        if self.resolved_profile() == "cpu":
            edits.append(cpu_batching)
        if edits:
            # Served from a derived copy, so the shipped repository stays as shipped.
            self._derived = tempfile.mkdtemp(prefix="i2tt-repository-")
            self.model_repository = derive_repository(self.model_repository,
                                                      Path(self._derived), chain(*edits))
        shm.remove_stale_regions()  # what killed servers left; the new one needs room
        shm.warn_if_low()
        log_file = self.options.log_file
        out = open(log_file, "ab") if log_file else None
        self.process = subprocess.Popen(self.command(binary),
                                        env=server_environment(binary, self.options.weights),
                                        stdout=out, stderr=subprocess.STDOUT if out else None,
                                        start_new_session=True)

    def wait_ready(self, timeout: float, models: list[str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        pending = models or self.expected_models()
        while True:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self.process.returncode} "
                                   f"before it was ready{self._log_hint()}")
            if self.stop_requested.is_set():
                raise RuntimeError("stop requested before the server was ready")
            pending = [m for m in pending if not self.ready(m)]
            if not pending and self.ready():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"models not ready after {timeout:.0f}s: {pending}{self._log_hint()}")
            time.sleep(0.5)

    def _log_hint(self) -> str:
        return f" (see {self.options.log_file})" if self.options.log_file else ""

    def end(self, timeout: float | None = None) -> int | None:
        """Stop the process at once (no drain); its exit code."""
        if not self.process or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGINT)  # tritonserver shuts down cleanly on SIGINT
        try:
            return self.process.wait((self.options.exit_timeout if timeout is None else timeout)
                                     + STOP_MARGIN)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def remove_derived(self) -> None:
        if self._derived:
            shutil.rmtree(self._derived, ignore_errors=True)
            self._derived = None
