"""Finding, preparing and running the real tritonserver.

Inside NVIDIA's container ``tritonserver`` is on PATH with its backends in
/opt/tritonserver/backends. Elsewhere it comes from the nvidia-pytriton wheel, which ships
the server, the Python backend and one backend stub per Python version; the stub matching
the running interpreter is put in place here, and the environment is set so the stub loads
this interpreter's libpython and site-packages (see docs/architecture.md).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import shm
from .repository import callers_first, cpu_batching, derive_repository
from .weights_layout import WEIGHTS_ENV

log = logging.getLogger("i2tt_server")

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "i2tt"


def cpu_seconds(pid: int) -> float | None:
    """CPU time a process has used (user + system), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def retire(pids: list[int], timeout: float, quiet: float = 1.0) -> None:
    """End the processes of a model's replaced version once each is idle (no CPU used for
    ``quiet`` seconds: its last batch is done), at the latest after ``timeout``. Triton
    2.51 never finishes unloading the old version of a model reloaded with one of its
    processes dead while requests keep coming (checked: the living old process stayed for
    good, and ending it failed no request), so the launcher ends them itself."""
    deadline = time.monotonic() + timeout
    last = {pid: cpu_seconds(pid) for pid in pids}
    while last:
        time.sleep(quiet)
        for pid in list(last):
            used = cpu_seconds(pid)
            if used is None:
                del last[pid]
            elif used == last[pid] or time.monotonic() > deadline:
                log.info("i2tt: ending process %d of the replaced model version", pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                del last[pid]
            else:
                last[pid] = used


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


# Requests carry the API key in this HTTP header; over gRPC Triton expects restricted
# protocols' headers prefixed, so gRPC calls send it as GRPC_API_KEY_HEADER metadata.
API_KEY_HEADER = "i2tt-api-key"
GRPC_API_KEY_HEADER = "triton-grpc-protocol-" + API_KEY_HEADER
API_KEY_ENV = "I2TT_API_KEY"
# The launcher's own header for the APIs no client needs: loading and unloading models
# (which could run any model.py), shared-memory registration, trace and log settings. Its
# value is a random secret made at each start and known only to the launcher.
CONTROL_HEADER = "i2tt-control"
CONTROL_APIS = ("model-repository", "shared-memory", "trace", "logging")
# With an API key every other API needs it too, except health: Kubernetes probes and load
# balancers call /v2/health/* without credentials.
KEYED_APIS = ("metadata", "inference", "model-config", "statistics")
# Seconds a stop may take beyond the exit timeout: tritonserver unloading what is left.
STOP_MARGIN = 10


@dataclass
class Tls:
    """PEM files: the server's certificate and key, and for mutual TLS the CA that signs
    the clients' certificates."""

    cert: Path
    key: Path
    client_ca: Path | None = None


class TritonServer:
    """One tritonserver process: start, wait until every model is ready, heal a model whose
    process died (``watchdog``), drain and stop.

    The server always runs in explicit model-control mode with every served model loaded
    at start, so the launcher can unload and reload one model; the model-control API is
    restricted to a header whose value only this object knows, so no client can use it.
    """

    def __init__(self, model_repository: str | os.PathLike,
                 weights: str | os.PathLike | None = None, http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int = 8002, host: str = "127.0.0.1",
                 models: list[str] | None = None, cache_size: int = 256 * 1024 * 1024,
                 log_file: str | os.PathLike | None = None, extra_args: list[str] | None = None,
                 profile: str = "auto", exit_timeout: int = 30, api_key: str | None = None,
                 tls: Tls | None = None, log_format: str = "default",
                 grpc_max_connection_age: float | None = None, watch: bool = True):
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
        if api_key is not None and (not api_key or any(c in api_key for c in ",:= \n")):
            raise ValueError("the API key must be non-empty without spaces, ',', ':' or '='")
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
        self.exit_timeout = exit_timeout
        self.api_key = api_key
        self.tls = tls
        self.log_format = log_format
        self.grpc_max_connection_age = grpc_max_connection_age
        self.watch = watch
        self.process: subprocess.Popen | None = None
        self.failure: str | None = None  # why the launcher gave up on the server
        self._control_secret = secrets.token_urlsafe(32)
        self._control = threading.Lock()  # one of heal / drain at a time
        self._stopping = threading.Event()
        # set (e.g. by a signal handler) to make start() give up and wait() drain and stop
        self.stop_requested = threading.Event()
        self._derived: str | None = None
        self._watchdog = None
        self._tls_proxy = None
        # Triton has no HTTPS: with TLS its HTTP endpoint listens on loopback only and a
        # TLS terminator in this process serves HTTPS on the public port.
        self._triton_http_port = free_port() if tls else http_port

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """Plain HTTP to the server itself (loopback; behind the TLS terminator with TLS)."""
        return f"http://127.0.0.1:{self._triton_http_port}"

    def command(self, binary: ServerBinary) -> list[str]:
        http_host = "127.0.0.1" if self.tls else self.host
        cmd = [str(binary.executable), f"--model-repository={self.model_repository}",
               f"--backend-directory={binary.backend_dir}",
               f"--http-port={self._triton_http_port}", f"--grpc-port={self.grpc_port}",
               f"--metrics-port={self.metrics_port}", f"--http-address={http_host}",
               f"--grpc-address={self.host}", f"--metrics-address={self.host}",
               # ready only while every model is: a model being healed takes the pod out
               "--strict-readiness=true", f"--exit-timeout-secs={self.exit_timeout}",
               f"--log-format={self.log_format}", "--metrics-config=summary_latencies=true",
               "--model-control-mode=explicit",
               *[f"--load-model={m}" for m in self.expected_models()]]
        secret = f"{CONTROL_HEADER}={self._control_secret}"
        keyed = f"{API_KEY_HEADER}={self.api_key}"
        for flag in ("--grpc-restricted-protocol", "--http-restricted-api"):
            cmd.append(f"{flag}={','.join(CONTROL_APIS)}:{secret}")
            if self.api_key:
                cmd.append(f"{flag}={','.join(KEYED_APIS)}:{keyed}")
        if self.tls:
            cmd += [f"--grpc-server-cert={self.tls.cert}", f"--grpc-server-key={self.tls.key}"]
            cmd += ([f"--grpc-use-ssl-mutual=true", f"--grpc-root-cert={self.tls.client_ca}"]
                    if self.tls.client_ca else ["--grpc-use-ssl=true"])
        if self.grpc_max_connection_age:
            # Clients reconnect (and a load balancer re-spreads them) after this age; calls
            # in flight on the old connection finish first (grace unbounded).
            cmd.append(f"--grpc-max-connection-age={int(self.grpc_max_connection_age * 1000)}")
        if binary.cache_dir and self.cache_size:
            # Identical requests (same image bytes) are answered from memory.
            cmd += [f"--cache-directory={binary.cache_dir}",
                    f"--cache-config=local,size={self.cache_size}"]
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
        shm.remove_stale_regions()  # what killed servers left; the new one needs room
        shm.warn_if_low()
        out = open(self.log_file, "ab") if self.log_file else None
        self.process = subprocess.Popen(self.command(binary),
                                        env=server_environment(binary, self.weights),
                                        stdout=out, stderr=subprocess.STDOUT if out else None,
                                        start_new_session=True)
        try:
            if self.tls:
                from .tls_proxy import TlsProxy

                self._tls_proxy = TlsProxy(self.host, self.http_port, self._triton_http_port,
                                           self.tls).start()
            self.wait_ready(timeout)
            if self.watch:
                from .watchdog import Watchdog

                self._watchdog = Watchdog(self).start()
        except BaseException:
            self.stop(drain=False)
            raise
        return self

    def expected_models(self) -> list[str]:
        if self.models:
            return list(self.models)
        return sorted(p.parent.name for p in self.model_repository.glob("*/config.pbtxt"))

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
        return f" (see {self.log_file})" if self.log_file else ""

    def ready(self, model: str | None = None) -> bool:
        """The server's readiness (every model ready), or one model's."""
        try:
            self._http("GET", f"/v2/models/{model}/ready" if model else "/v2/health/ready",
                       timeout=2)
            return True
        except (urllib.error.URLError, OSError):
            return False

    def _http(self, method: str, path: str, control: bool = False, timeout: float = 5,
              body: bytes | None = None):
        """The parsed JSON answer of one call (None for an empty 200); raises on errors."""
        headers = {CONTROL_HEADER: self._control_secret} if control else {}
        if self.api_key:
            headers[API_KEY_HEADER] = self.api_key
        request = urllib.request.Request(self.http_url + path, data=body, headers=headers,
                                         method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read()
        return json.loads(data) if data else None

    def statistics(self, model: str) -> dict:
        return self._http("GET", f"/v2/models/{model}/stats")["model_stats"][0]

    def model_states(self) -> dict[str, str]:
        """Each model's state in the repository index (READY, UNLOADING, UNAVAILABLE ...)."""
        index = self._http("POST", "/v2/repository/index", control=True, body=b"{}")
        return {entry["name"]: entry.get("state", "") for entry in index}

    def load(self, model: str, timeout: float) -> None:
        self._http("POST", f"/v2/repository/models/{model}/load", control=True, body=b"{}",
                   timeout=timeout)

    def unload(self, model: str) -> None:
        self._http("POST", f"/v2/repository/models/{model}/unload", control=True, body=b"{}")

    def wait_unloaded(self, models: list[str], deadline: float) -> list[str]:
        """Wait until none of ``models`` is still serving or unloading; the ones still busy
        at the deadline. An unload finishes when the model's requests in flight are done."""
        busy = list(models)
        while busy:
            states = self.model_states()
            busy = [m for m in busy if states.get(m) in ("READY", "UNLOADING", "LOADING")]
            if not busy or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return busy

    def heal(self, model: str, reason: str, load_timeout: float = 600.0,
             others_alive: bool = False) -> bool:
        """Reload ``model``, a process of which died. While ``others_alive`` (another of its
        processes still runs), it is reloaded in place: Triton keeps the loaded model
        serving until the new one is ready, so the living processes go on answering (and
        the dead one fails the requests it is handed, which the i2tt client retries). With
        none alive it is unloaded first, which takes it, and with strict readiness the
        server, out of readiness until it is back. False (and the server stopped) if it does
        not come back."""
        with self._control:
            if self._stopping.is_set():
                return True
            if others_alive:
                log.error("i2tt: %s; reloading %s while its other processes serve", reason, model)
            else:
                log.error("i2tt: %s; %s is not ready while it reloads", reason, model)
            started = time.monotonic()
            in_place = others_alive and self.mark_changed(model)
            survivors = self.model_processes(model) if in_place else []
            try:
                if not in_place:
                    self.unload(model)
                # Loading right away (Triton runs it after the unload) leaves no moment in
                # which the server looks ready without the model.
                self.load(model, load_timeout)
                # Ensembles unloaded with the model come back with it; load any that did not.
                for other in self.expected_models():
                    if not self.ready(other):
                        self.load(other, load_timeout)
                self.wait_ready(60)
                retire(survivors, self.exit_timeout)
            except Exception as exc:  # noqa: BLE001 - any failure means: give up the server
                if self.stop_requested.is_set():
                    return True  # a stop came meanwhile: that is no failure
                self.failure = f"{model} did not come back after its process died: {exc}"
                log.error("i2tt: %s; stopping the server", self.failure)
                self._stop_now()
                return False
            log.error("i2tt: %s is ready again after %.1fs", model, time.monotonic() - started)
            return True

    def model_processes(self, model: str) -> list[int]:
        from .watchdog import stub_processes

        return [pid for pid, name in stub_processes(self.process.pid).items() if name == model]

    def mark_changed(self, model: str) -> bool:
        """Make Triton's next load of ``model`` a reload: Triton 2.51 reloads a loaded model
        only when its files changed (checked: a plain load with one process dead is a
        no-op, and after touching the model's files it loads new processes while the
        living ones serve). False where the repository is read-only."""
        folder = self.model_repository / model
        try:
            for path in [folder, *folder.rglob("*")]:
                os.utime(path)
        except OSError as exc:
            log.warning("i2tt: cannot mark %s changed (%s); unloading it to reload", model, exc)
            return False
        return True

    def drain(self, timeout: float | None = None) -> list[str]:
        """Stop taking requests and let the accepted ones finish: unload the callers first
        (ensembles, and models that call others, like ocr_page: their requests in flight
        still reach the models they call, which stay loaded), then the models they call,
        each unload finishing when its requests are done. Returns the models still busy
        when ``timeout`` (default: the exit timeout) ran out."""
        deadline = time.monotonic() + (self.exit_timeout if timeout is None else timeout)
        self._stopping.set()
        # a model being healed holds the lock while it loads: wait for it only so long
        if not self._control.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return ["(a model still reloading)"]
        try:
            if not self.process or self.process.poll() is not None:
                return []
            busy = []
            try:
                for group in callers_first(self.model_repository):
                    loaded = [m for m, state in self.model_states().items()
                              if m in group and state == "READY"]
                    for model in loaded:
                        self.unload(model)
                    busy += self.wait_unloaded(loaded, deadline)
            except (urllib.error.URLError, OSError) as exc:
                log.error("i2tt: draining failed: %s", exc)
            return busy
        finally:
            self._control.release()

    def stop(self, timeout: float | None = None, drain: bool = True) -> int | None:
        """Drain, then stop the process; its exit code. The whole stop takes at most
        ``timeout`` (default: the exit timeout) plus STOP_MARGIN seconds."""
        timeout = self.exit_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            if drain and self.process and self.process.poll() is None:
                busy = self.drain(timeout)
                if busy:
                    log.error("i2tt: requests still in flight on %s after %ss", busy, timeout)
            self._stopping.set()
            return self._stop_now(max(0.0, deadline - time.monotonic()))
        finally:
            self._stop_companions()

    def _stop_companions(self) -> None:
        """What the launcher runs beside the server: the watchdog, the TLS terminator and
        the derived repository (once the server has stopped or exited)."""
        if self._watchdog:
            self._watchdog.stop()
        if self._tls_proxy:
            self._tls_proxy.stop()
        self.remove_derived()
        if self.process and self.process.poll() is not None:
            # a server that had to be killed leaves its model processes' shared memory
            shm.remove_stale_regions()

    def _stop_now(self, timeout: float | None = None) -> int | None:
        self._stopping.set()
        if not self.process or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGINT)  # tritonserver shuts down cleanly on SIGINT
        try:
            return self.process.wait((self.exit_timeout if timeout is None else timeout)
                                     + STOP_MARGIN)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def remove_derived(self) -> None:
        if self._derived:
            shutil.rmtree(self._derived, ignore_errors=True)
            self._derived = None

    def wait(self) -> int:
        """Run until the server exits, or until ``stop_requested`` is set: then drain and
        stop. The exit code: 0 after a requested stop, non-zero if the server failed."""
        assert self.process is not None
        try:
            while self.process.poll() is None:
                if self.stop_requested.wait(0.2):
                    self.stop()
                    break
            if self.failure:
                return 1
            return 0 if self.stop_requested.is_set() else self.process.returncode
        finally:
            self._stop_companions()

    def __enter__(self):
        return self.start() if self.process is None else self

    def __exit__(self, *exc):
        self.stop()
