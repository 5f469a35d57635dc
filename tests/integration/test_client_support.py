"""Shared fixtures of the client and CLI tests: answers from plain tritonclient calls (the
client's results must equal them) and a loopback HTTP server for URL inputs.

This module holds no tests; test_client.py and test_cli.py import its fixtures.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

IMAGES = ("example1.jpg", "example2.png", "human1.png")
TEXTS = ("a dog running on a beach", "two cats asleep on a red sofa")
OUTPUTS = {"blip_caption": ("CAPTION",), "kosmos2_caption": ("CAPTION", "ENTITIES"),
           "trocr_ocr": ("TEXT",), "t5_tags": ("TAGS",), "caption_tags": ("CAPTION", "TAGS")}
# Which seed images each model's reference covers (fewer for the slow models).
COVERAGE = {"blip_caption": IMAGES, "kosmos2_caption": ("human1.png", "example1.jpg"),
            "trocr_ocr": ("example2.png", "example1.jpg"),
            "caption_tags": ("example1.jpg", "human1.png")}
SLOW_SECONDS = 3.0


def direct_infer(client: grpcclient.InferenceServerClient, model: str, name: str,
                 value: bytes) -> dict:
    """One request with plain tritonclient; strings decoded, TAGS padding dropped."""
    tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.object_))
    response = client.infer(model, [tensor])
    out = {}
    for output in OUTPUTS[model]:
        values = [v.decode("utf-8", errors="replace") for v in response.as_numpy(output).reshape(-1)]
        out[output] = [v for v in values if v] if output == "TAGS" else values[0]
    if "ENTITIES" in out:
        out["ENTITIES"] = json.loads(out["ENTITIES"])
    return out


@pytest.fixture(scope="session")
def reference(triton, seed_images) -> dict:
    """``reference[model][input] -> outputs``, from direct calls sent concurrently."""
    calls = [(model, "IMAGE", name, seed_images[name])
             for model, names in COVERAGE.items() for name in names]
    calls += [("t5_tags", "TEXT", text, text.encode()) for text in TEXTS]
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        with ThreadPoolExecutor(len(calls)) as pool:
            answers = list(pool.map(lambda c: direct_infer(client, c[0], c[1], c[3]), calls))
    finally:
        client.close()
    table: dict = {}
    for (model, _, key, _), answer in zip(calls, answers):
        table.setdefault(model, {})[key] = answer
    return table


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/slow/"):
            time.sleep(SLOW_SECONDS)
            self.path = self.path[len("/slow"):]
        if self.path.startswith("/nolength/"):
            # A body without Content-Length: the client's size limit must still hold.
            data = (Path(self.directory) / self.path[len("/nolength/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def image_http(tmp_path_factory, seed_images) -> str:
    """Base URL (``http://127.0.0.1:PORT/``) of a loopback server holding the seed images."""
    root = tmp_path_factory.mktemp("http")
    for name, data in seed_images.items():
        (root / name).write_bytes(data)
    handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def requests_seen(triton, model: str) -> int:
    """Requests the server has answered for ``model`` (cache hits and failures included).

    An ensemble's statistics are updated a moment after its response is sent, so read
    until the count has settled.
    """
    def count() -> int:
        stats = triton.statistics(model)["inference_stats"]
        return stats["success"]["count"] + stats["fail"]["count"]

    last = count()
    for _ in range(20):
        time.sleep(0.25)
        now = count()
        if now == last:
            return now
        last = now
    return last
