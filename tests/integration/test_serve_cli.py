"""`i2tt-server serve` as users run it (what `make serve WEIGHTS=test` does): starts,
reports readiness, answers caption_tags over gRPC, and drains and shuts down cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from i2tt_server.launcher import free_port
from triton_calls import infer

ROOT = Path(__file__).resolve().parents[2]


def test_serve_answers_and_stops_on_sigint(weights_dir, seed_images, tmp_path):
    import tritonclient.grpc as grpcclient

    ports = {"--http-port": free_port(), "--grpc-port": free_port(), "--metrics-port": free_port()}
    command = [sys.executable, "-m", "i2tt_server", "serve", "--weights", str(weights_dir),
               "--no-fetch", "--host", "127.0.0.1", "--models", "blip_caption", "t5_tags",
               "caption_tags"]
    for flag, port in ports.items():
        command += [flag, str(port)]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while b"I2TT ready" not in log.read_bytes():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.5)
        with grpcclient.InferenceServerClient(f"127.0.0.1:{ports['--grpc-port']}") as client:
            (row,) = infer(client, "caption_tags", IMAGE=[seed_images["example1.jpg"]])
            assert row["CAPTION"] and isinstance(row["TAGS"], list)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    assert "draining requests in flight" in log.read_text()


def test_serve_without_weights_fails_clearly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "i2tt_server", "serve", "--weights",
                             str(tmp_path / "none"), "--no-fetch"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env={**os.environ})
    assert result.returncode == 1
    assert "no weights for" in result.stderr
