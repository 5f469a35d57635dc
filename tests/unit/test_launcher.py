"""The one tritonserver command line the launcher builds, and the serve options that feed
it (no server started here; the integration tests check the same things on a real one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from i2tt_server.cli import main
from i2tt_server.launcher import TritonServer
from i2tt_server.serve_options import ServeOptions, Tls, triton_command
from i2tt_server.triton_binary import ServerBinary
from testdata import REPOSITORY

BINARY = ServerBinary(Path("/opt/tritonserver/bin/tritonserver"), Path("/opt/backends"), None)
SECRET = "s" * 43


def command(**kwargs) -> list[str]:
    return triton_command(ServeOptions(REPOSITORY, **kwargs), BINARY, REPOSITORY, SECRET, 8000)


def flags(cmd: list[str], name: str) -> list[str]:
    return [arg.split("=", 1)[1] for arg in cmd if arg.startswith(name + "=")]


def test_closed_by_default():
    cmd = command()
    for name in ("--http-address", "--grpc-address", "--metrics-address"):
        assert flags(cmd, name) == ["127.0.0.1"], name
    assert flags(cmd, "--strict-readiness") == ["true"]
    assert flags(cmd, "--exit-timeout-secs") == ["30"]
    assert flags(cmd, "--metrics-config") == ["summary_latencies=true"]
    assert not any(a.startswith("--grpc-use-ssl") for a in cmd)


@pytest.mark.parametrize("models", [None, ["t5_tags"]])
def test_model_control_is_explicit_and_closed_behind_a_secret(models):
    cmd = command(models=models)
    assert flags(cmd, "--model-control-mode") == ["explicit"]
    assert flags(cmd, "--load-model") == (models or sorted(p.parent.name for p in REPOSITORY.glob("*/config.pbtxt")))
    for name in ("--grpc-restricted-protocol", "--http-restricted-api"):
        (rule,) = flags(cmd, name)
        apis, header = rule.split(":")
        assert set(apis.split(",")) == {"model-repository", "shared-memory", "trace", "logging"}
        key, secret = header.split("=")
        assert key == "i2tt-control" and len(secret) >= 32
    # a fresh secret at every start
    assert TritonServer(ServeOptions(REPOSITORY)).command(BINARY) != \
        TritonServer(ServeOptions(REPOSITORY)).command(BINARY)


def test_api_key_restricts_everything_but_health():
    cmd = command(api_key="s3cret")
    for name in ("--grpc-restricted-protocol", "--http-restricted-api"):
        rules = dict(rule.split(":") for rule in flags(cmd, name))
        keyed = [apis for apis, header in rules.items() if header == "i2tt-api-key=s3cret"]
        assert keyed == ["metadata,inference,model-config,statistics"]
        restricted = {api for apis in rules for api in apis.split(",")}
        assert "health" not in restricted
    with pytest.raises(ValueError):
        ServeOptions(REPOSITORY, api_key="a,b")


def test_tls_and_other_options(tmp_path):
    tls = Tls(Path("s.pem"), Path("s.key"), Path("ca.pem"))
    options = ServeOptions(REPOSITORY, host="0.0.0.0", tls=tls, exit_timeout=45,
                           log_format="ISO8601", grpc_max_connection_age=300)
    cmd = TritonServer(options).command(BINARY)
    assert flags(cmd, "--grpc-use-ssl-mutual") == ["true"] and flags(cmd, "--grpc-root-cert") == ["ca.pem"]
    assert flags(cmd, "--grpc-server-cert") == ["s.pem"] and flags(cmd, "--grpc-server-key") == ["s.key"]
    # Triton's HTTP stays on loopback behind the launcher's HTTPS terminator
    assert flags(cmd, "--http-address") == ["127.0.0.1"] and flags(cmd, "--grpc-address") == ["0.0.0.0"]
    assert flags(cmd, "--http-port") != ["8000"]
    assert flags(cmd, "--exit-timeout-secs") == ["45"] and flags(cmd, "--log-format") == ["ISO8601"]
    assert flags(cmd, "--grpc-max-connection-age") == ["300000"]
    assert flags(command(tls=Tls(Path("s.pem"), Path("s.key"))), "--grpc-use-ssl") == ["true"]


@pytest.mark.parametrize("args,message", [
    (["--tls-cert", "nowhere.pem"], "TLS needs both --tls-cert and --tls-key"),
    (["--tls-cert", "nowhere.pem", "--tls-key", "nowhere.key"], "no such file"),
    (["--api-key-file", "EMPTY"], "is empty"),
])
def test_serve_refuses_incomplete_security_options(args, message, weights_dir, tmp_path, capsys):
    (tmp_path / "empty").write_text("\n")
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    assert main(["serve", "--weights", str(weights_dir), "--no-fetch", *args]) == 1
    assert message in capsys.readouterr().err


def test_retire_ends_idle_processes_at_once_and_busy_ones_at_the_timeout():
    import subprocess
    import sys
    import time

    from i2tt_server.model_processes import cpu_seconds, retire

    idle = subprocess.Popen(["sleep", "60"])
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert cpu_seconds(idle.pid) is not None
        started = time.monotonic()
        retire([idle.pid], timeout=30.0, quiet=0.5)
        assert time.monotonic() - started < 3  # idle for half a second: ended then
        started = time.monotonic()
        retire([busy.pid], timeout=2.0, quiet=0.5)
        assert 2.0 <= time.monotonic() - started < 6  # never idle: ended at the timeout
        assert idle.wait(5) and busy.wait(5)  # both killed (a non-zero code)
    finally:
        for process in (idle, busy):
            process.kill()
            process.wait()


def test_serve_options_come_from_the_serve_arguments():
    from i2tt_server.cli import parser, serve_options
    from i2tt_server.repository import ModelRepository

    args = parser().parse_args(["serve", "--host", "0.0.0.0", "--grpc-port", "9001",
                                "--exit-timeout", "45", "--batching", "cpu",
                                "--scheduling", "inflight", "--triton-arg=--log-verbose=1"])
    repository = ModelRepository.read(REPOSITORY)
    options = serve_options(args, repository, ["t5_tags"], Path("weights"))
    assert options.model_repository is repository  # read once, shared
    assert (options.host, options.grpc_port, options.exit_timeout, options.profile,
            options.scheduling) == ("0.0.0.0", 9001, 45, "cpu", "inflight")
    assert options.extra_args == ["--log-verbose=1"] and options.served_models() == ["t5_tags"]
    assert options.tls is None
