"""What ``serve`` is asked for, as one value, and the one tritonserver command line it makes.

The server always runs in explicit model-control mode with every served model loaded at
start, so the launcher can unload and reload one model; the model-control API is restricted
to a header whose value only the launcher knows, so no client can use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .repository import SCHEDULING, ModelRepository
from .triton_binary import ServerBinary, has_gpu

PROFILES = ("auto", "gpu", "cpu")

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


@dataclass(frozen=True)
class Tls:
    """PEM files: the server's certificate and key, and for mutual TLS the CA that signs
    the clients' certificates."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class ServeOptions:
    """How to serve a model repository (a path is read into a ``ModelRepository``)."""

    model_repository: ModelRepository
    weights: str | os.PathLike | None = None
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    models: list[str] | None = None
    cache_size: int = 256 * 1024 * 1024
    log_file: str | os.PathLike | None = None
    extra_args: list[str] | None = None
    profile: str = "auto"
    scheduling: str = "config"  # config | static | inflight (repository.set_scheduling)
    exit_timeout: int = 30
    api_key: str | None = None
    tls: Tls | None = None
    log_format: str = "default"
    grpc_max_connection_age: float | None = None

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {self.profile!r}")
        if self.scheduling not in SCHEDULING:
            raise ValueError(f"scheduling must be one of {SCHEDULING}, not "
                             f"{self.scheduling!r}")
        key = self.api_key
        if key is not None and (not key or any(c in key for c in ",:= \n")):
            raise ValueError("the API key must be non-empty without spaces, ',', ':' or '='")
        if not isinstance(self.model_repository, ModelRepository):
            object.__setattr__(self, "model_repository",
                               ModelRepository.read(self.model_repository))

    def served_models(self) -> list[str]:
        return list(self.models) if self.models else self.model_repository.names

    def resolved_profile(self) -> str:
        return self.profile if self.profile != "auto" else ("gpu" if has_gpu() else "cpu")


def triton_command(options: ServeOptions, binary: ServerBinary, repository: Path,
                   control_secret: str, http_port: int) -> list[str]:
    """The tritonserver command line: ``repository`` is the folder served (the options'
    or a copy derived from it), ``http_port`` Triton's own HTTP port (with TLS a loopback
    one, behind the launcher's HTTPS terminator)."""
    host = options.host
    cmd = [str(binary.executable), f"--model-repository={repository}",
           f"--backend-directory={binary.backend_dir}",
           f"--http-port={http_port}", f"--grpc-port={options.grpc_port}",
           f"--metrics-port={options.metrics_port}",
           f"--http-address={'127.0.0.1' if options.tls else host}",
           f"--grpc-address={host}", f"--metrics-address={host}",
           # ready only while every model is: a model being healed takes the pod out
           "--strict-readiness=true", f"--exit-timeout-secs={options.exit_timeout}",
           f"--log-format={options.log_format}", "--metrics-config=summary_latencies=true",
           "--model-control-mode=explicit",
           *[f"--load-model={m}" for m in options.served_models()]]
    secret = f"{CONTROL_HEADER}={control_secret}"
    keyed = f"{API_KEY_HEADER}={options.api_key}"
    for flag in ("--grpc-restricted-protocol", "--http-restricted-api"):
        cmd.append(f"{flag}={','.join(CONTROL_APIS)}:{secret}")
        if options.api_key:
            cmd.append(f"{flag}={','.join(KEYED_APIS)}:{keyed}")
    return cmd + _tls_flags(options.tls) + _tuning_flags(options, binary) \
        + list(options.extra_args or [])


def _tls_flags(tls: Tls | None) -> list[str]:
    if not tls:
        return []
    flags = [f"--grpc-server-cert={tls.cert}", f"--grpc-server-key={tls.key}"]
    return flags + ([f"--grpc-use-ssl-mutual=true", f"--grpc-root-cert={tls.client_ca}"]
                    if tls.client_ca else ["--grpc-use-ssl=true"])


def _tuning_flags(options: ServeOptions, binary: ServerBinary) -> list[str]:
    flags = []
    if options.grpc_max_connection_age:
        # Clients reconnect (and a load balancer re-spreads them) after this age; calls
        # in flight on the old connection finish first (grace unbounded).
        flags.append(f"--grpc-max-connection-age={int(options.grpc_max_connection_age * 1000)}")
    if binary.cache_dir and options.cache_size:
        # Identical requests (same image bytes) are answered from memory.
        flags += [f"--cache-directory={binary.cache_dir}",
                  f"--cache-config=local,size={options.cache_size}"]
    return flags
