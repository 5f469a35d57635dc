"""`i2tt-server serve` as users run it (what `make serve WEIGHTS=test` does): starts,
reports readiness, answers caption_tags over gRPC, and drains and shuts down cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from served import Served
from triton_calls import infer

ROOT = Path(__file__).resolve().parents[2]


def test_serve_answers_and_stops_on_sigint(weights_dir, seed_images, tmp_path):
    import tritonclient.grpc as grpcclient

    served = Served(weights_dir, tmp_path / "serve.log", "--host", "127.0.0.1",
                    "--models", "blip_caption", "t5_tags", "caption_tags")
    try:
        served.wait_ready()
        with grpcclient.InferenceServerClient(served.grpc_url) as client:
            (row,) = infer(client, "caption_tags", IMAGE=[seed_images["example1.jpg"]])
            assert row["CAPTION"] and isinstance(row["TAGS"], list)
        served.process.send_signal(signal.SIGINT)
        assert served.process.wait(timeout=60) == 0, served.text()[-3000:]
    finally:
        served.close()
    assert "draining requests in flight" in served.text()


def test_serve_without_weights_fails_clearly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "i2tt_server", "serve", "--weights",
                             str(tmp_path / "none"), "--no-fetch"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env={**os.environ})
    assert result.returncode == 1
    assert "no weights for" in result.stderr
