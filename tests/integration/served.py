"""`i2tt-server serve` run as users and containers run it, in a subprocess on free ports,
for the tests of what only the launcher does (healing, draining, TLS, the API key)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from i2tt_server.launcher import free_port

ROOT = Path(__file__).resolve().parents[2]


class Served:
    def __init__(self, weights: Path, log: Path, *args: str, env: dict | None = None):
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log = log
        script = Path(sys.executable).parent / "i2tt-server"  # the console script users run
        launcher = [str(script)] if script.exists() else [sys.executable, "-m", "i2tt_server"]
        command = [*launcher, "serve", "--weights", str(weights),
                   "--no-fetch", "--http-port", str(self.http_port),
                   "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port),
                   *args]
        with open(log, "wb") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out,
                                            stderr=subprocess.STDOUT,
                                            env={**os.environ, **(env or {})})

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 300) -> "Served":
        deadline = time.monotonic() + timeout
        while "I2TT ready" not in self.text():
            assert self.process.poll() is None, self.text()[-3000:]
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.3)
        return self

    def http(self, path: str, headers: dict | None = None, method: str = "GET",
             body: bytes | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.http_url + path, data=body, method=method,
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def ready(self, model: str | None = None) -> bool:
        path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
        try:
            return self.http(path)[0] == 200
        except OSError:
            return False

    def statistics(self, model: str, headers: dict | None = None) -> dict:
        status, body = self.http(f"/v2/models/{model}/stats", headers)
        assert status == 200, body
        return json.loads(body)["model_stats"][0]

    def tritonserver_pid(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return int(children.read_text().split()[0])

    def terminate(self, timeout: float = 120) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.terminate(90)
            except subprocess.TimeoutExpired:
                server = self.tritonserver_pid()
                self.process.kill()
                self.process.wait()
                os.killpg(server, signal.SIGKILL)
