"""The client's deadlines, retries, API key, mutual TLS and load balancing, against real
tritonservers.

Most tests run on a second server started here ("guarded") as `i2tt-server serve` locks
one down: gRPC with mutual TLS, every API but health restricted to callers with the API
key, model control closed; plus a queue policy that rejects requests whose timeout has
passed, so the deadline the client sends can be seen at work.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from certificates import Certificates, make_certificates
from i2tt_client import (AsyncI2TTClient, AuthenticationError, DeadlineExceededError,
                         I2TTClient, Tags, UnavailableError)
from i2tt_client.cli import main
from i2tt_server.launcher import TritonServer, free_port
from i2tt_server.repository import derive_repository
from i2tt_server.serve_options import ServeOptions, Tls
from testdata import REPOSITORY
from triton_calls import TEXTS

I2TT = Path(sys.executable).parent / "i2tt"
API_KEY = "test-key-5d2c"
QUEUE_DELAY_US = 100_000  # a lone request waits this long in the queue for company


def queue_policy(config) -> None:
    """Hold requests 100 ms for batching, and drop any whose own timeout passes first.

    Triton honours a request's timeout only with ``allow_timeout_override`` and a non-zero
    default timeout (with a default of 0 the request's timeout is ignored)."""
    if config.HasField("dynamic_batching"):
        batching = config.dynamic_batching
        batching.max_queue_delay_microseconds = QUEUE_DELAY_US
        batching.default_queue_policy.timeout_action = 0  # REJECT
        batching.default_queue_policy.allow_timeout_override = True
        batching.default_queue_policy.default_timeout_microseconds = 60_000_000


@dataclass
class Guarded:
    server: TritonServer
    certs: Certificates
    log: Path

    @property
    def grpc_url(self) -> str:
        return self.server.grpc_url

    def tls(self, client_certificate: bool = True) -> dict:
        options = {"root_certificates": str(self.certs.ca)}
        if client_certificate:
            options.update(private_key=str(self.certs.client.key),
                           certificate_chain=str(self.certs.client.cert))
        return options

    def client(self, **options) -> I2TTClient:
        return I2TTClient(self.grpc_url, **{"api_key": API_KEY, **self.tls(), **options})


@pytest.fixture(scope="module")
def guarded(weights_dir, tmp_path_factory) -> Guarded:
    tmp = tmp_path_factory.mktemp("guarded")
    certs = make_certificates(tmp / "certs")
    repository = derive_repository(REPOSITORY, tmp / "model_repository", queue_policy,
                                   models=["blip_caption", "t5_tags", "caption_tags"])
    server = TritonServer(ServeOptions(
        repository, weights=weights_dir, http_port=free_port(), grpc_port=free_port(),
        metrics_port=free_port(), host="127.0.0.1", cache_size=0,
        log_file=tmp / "tritonserver.log", api_key=API_KEY,
        tls=Tls(certs.server.cert, certs.server.key, client_ca=certs.ca),
        extra_args=["--log-verbose=1"]))  # the log shows each request's timeout
    server.start(timeout=300)
    yield Guarded(server, certs, tmp / "tritonserver.log")
    server.stop()


def fresh_image() -> bytes:
    """Image bytes nobody sent before (no cache can answer them)."""
    pixels = np.random.default_rng().integers(0, 255, (32, 32, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def counts(server: TritonServer, model: str) -> tuple[int, int]:
    """(successes, failures) of ``model`` once in-flight work has settled."""
    def read():
        stats = server.statistics(model)["inference_stats"]
        return stats["success"]["count"], stats["fail"]["count"]

    last = read()
    for _ in range(20):
        time.sleep(0.25)
        now = read()
        if now == last:
            break
        last = now
    return last


# ---- deadlines -------------------------------------------------------------------------

def test_each_attempt_tells_the_server_what_is_left_of_the_deadline(guarded):
    # The server's verbose log prints every request's timeout as it prepares it.
    with guarded.client() as client:
        client.tags("deadline probe " + TEXTS[0], timeout=37.5)
    sent = [int(match) for match in re.findall(
        r"model: t5_tags, .*?timeout \(us\): (\d+)", guarded.log.read_text())]
    assert sent and 30_000_000 < sent[-1] <= 37_500_000, sent[-3:]


def test_the_server_drops_the_work_of_a_caller_that_has_gone(guarded):
    """The server holds a lone request 100 ms; a caller with a 50 ms deadline has gone by
    then. Told the deadline, the server rejects the request in the queue of the ensemble's
    first step instead of running it (its statistics show a failure, not a success)."""
    with guarded.client() as client:
        before = counts(guarded.server, "blip_caption")
        with pytest.raises((DeadlineExceededError, UnavailableError)):
            client.describe(fresh_image(), timeout=0.05)
        assert counts(guarded.server, "blip_caption") == (before[0], before[1] + 1), \
            "the request must be rejected in the queue, not run"
        # A deadline that allows the work gets the answer.
        assert client.describe(fresh_image(), timeout=60).caption is not None


def test_retries_stop_at_the_deadline_and_raise_the_last_error():
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with I2TTClient(dead, retries=1000, retry_backoff=0.05, timeout=2.0) as client:
        with pytest.raises(UnavailableError) as raised:
            client.tags(TEXTS[0])
    elapsed = time.monotonic() - started
    assert 3 <= raised.value.attempts < 1000, raised.value.attempts
    assert elapsed < 2.0 + 2.0, f"retrying went on {elapsed:.1f}s past a 2 s deadline"

    async def through_asyncio():
        async with AsyncI2TTClient(dead, retries=1000, retry_backoff=0.05) as client:
            return await client.tags(TEXTS[0], timeout=1.0, errors="return")

    started = time.monotonic()
    error = asyncio.run(through_asyncio())
    assert isinstance(error, UnavailableError) and 2 <= error.attempts < 1000
    assert time.monotonic() - started < 1.0 + 2.0


# ---- API key and mutual TLS ------------------------------------------------------------

def test_the_api_key_and_client_certificate_open_every_call(guarded):
    with guarded.client(timeout=60) as client:
        health = client.health()
        assert health.ok, health.error
        assert {m.name for m in health.models} == {"blip_caption", "t5_tags", "caption_tags"}
        assert isinstance(client.tags(TEXTS[0]), Tags)
        assert set(client.infer("t5_tags", {"TEXT": TEXTS[1]})) == {"TAGS"}


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_calls_without_the_right_key_are_refused_and_not_retried(guarded, key):
    with guarded.client(api_key=key, retries=3, timeout=30) as client:
        with pytest.raises(AuthenticationError, match="restricted") as raised:
            client.tags(TEXTS[0])
        assert raised.value.attempts == 1 and not raised.value.retryable
        health = client.health()
        assert not health.ok and "restricted" in health.error


@pytest.mark.parametrize("tls", ["plaintext", "no client certificate", "a stranger's certificate"])
def test_mutual_tls_refuses_other_connections(guarded, tls):
    options = {"plaintext": {"root_certificates": None, "ssl": False},
               "no client certificate": guarded.tls(client_certificate=False),
               "a stranger's certificate": {
                   **guarded.tls(), "private_key": str(guarded.certs.stranger.key),
                   "certificate_chain": str(guarded.certs.stranger.cert)}}[tls]
    with I2TTClient(guarded.grpc_url, api_key=API_KEY, timeout=30, **options) as client:
        with pytest.raises(UnavailableError):
            client.tags(TEXTS[0])
        assert client.is_live() is False


def test_cli_takes_the_key_from_a_file_or_the_environment(guarded, tmp_path, monkeypatch,
                                                          capsys):
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n")
    tls = ["--root-certificates", str(guarded.certs.ca),
           "--private-key", str(guarded.certs.client.key),
           "--certificate-chain", str(guarded.certs.client.cert)]
    monkeypatch.setenv("I2TT_SERVER", guarded.grpc_url)
    monkeypatch.delenv("I2TT_API_KEY", raising=False)

    assert main([*tls, "--api-key-file", str(key_file), "tags", TEXTS[0], "--format", "jsonl"]) == 0
    assert '"error": null' in capsys.readouterr().out
    assert main([*tls, "--api-key-file", str(key_file), "health"]) == 0
    assert "caption_tags" in capsys.readouterr().out

    assert main([*tls, "tags", TEXTS[0], "--format", "jsonl"]) == 1
    assert "AuthenticationError" in capsys.readouterr().out
    monkeypatch.setenv("I2TT_API_KEY", API_KEY)
    assert main(["tags", TEXTS[0], *tls, "--format", "jsonl"]) == 0
    capsys.readouterr()

    key_file.write_text("")
    with pytest.raises(SystemExit, match="non-empty"):
        main([*tls, "--api-key-file", str(key_file), "health"])


# ---- dns:/// targets and round_robin -----------------------------------------------------

def test_a_dns_target_with_round_robin_reaches_the_server(guarded, triton, seed_images):
    # localhost resolves to 127.0.0.1 and ::1; the servers listen on 127.0.0.1 only, so
    # round_robin must also skip an address that does not answer (a pod that has gone).
    with I2TTClient(f"dns:///localhost:{triton.grpc_port}", load_balancing="round_robin",
                    timeout=60) as client:
        assert client.health().ok
        assert client.caption(seed_images["example1.jpg"]).caption is not None
    with I2TTClient(f"dns:///localhost:{guarded.server.grpc_port}", api_key=API_KEY,
                    load_balancing="round_robin", timeout=60, **guarded.tls()) as client:
        assert isinstance(client.tags(TEXTS[0]), Tags)


def test_the_cli_balances_with_round_robin(triton):
    """gRPC's own trace shows which load-balancing policy the channel runs."""
    def trace(*options: str) -> str:
        env = {**os.environ, "GRPC_TRACE": "round_robin", "GRPC_VERBOSITY": "debug"}
        done = subprocess.run([str(I2TT), "--server", f"dns:///localhost:{triton.grpc_port}",
                               *options, "health"], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stderr

    balancer = "[RR "  # how gRPC's round_robin policy names itself in its trace lines
    assert balancer in trace("--load-balancing", "round_robin")
    assert balancer not in trace(), "without the option the channel keeps pick_first"


def readme_command(start: str) -> list[str]:
    """The README's shell command that begins with ``start`` (continuation lines joined)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    text = text.replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(start))
    return shlex.split(line.split("#")[0])


def test_readme_security_and_balancing_commands(guarded, tmp_path):
    """The README's commands as a user runs them: the files it names in the working folder,
    the server from $I2TT_SERVER; only the headless Service's name becomes localhost."""
    shutil.copy(guarded.certs.ca, tmp_path / "ca.pem")
    shutil.copy(guarded.certs.client.key, tmp_path / "client.key")
    shutil.copy(guarded.certs.client.cert, tmp_path / "client.pem")
    (tmp_path / "api-key.txt").write_text(API_KEY + "\n")
    env = {**os.environ, "I2TT_SERVER": guarded.grpc_url}
    env.pop("I2TT_API_KEY", None)

    def sh(argv: list[str]) -> subprocess.CompletedProcess:
        assert argv[0] == "i2tt"
        return subprocess.run([str(I2TT), *argv[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    secure = readme_command("i2tt --api-key-file")
    done = sh(secure)
    assert done.returncode == 0 and "caption_tags" in done.stdout, done.stdout + done.stderr
    balanced = readme_command("i2tt --server dns:///")
    balanced = [a.replace("i2tt-headless:8001", f"localhost:{guarded.server.grpc_port}")
                for a in balanced]
    done = sh(balanced + secure[1:-1])  # the same key and certificates
    assert done.returncode == 0 and "caption_tags" in done.stdout, done.stdout + done.stderr
