"""Fixtures of the integration tests: answers from plain tritonclient calls (the client's
results must equal them), a loopback HTTP server for URL inputs, and a statistics helper."""

from __future__ import annotations

import http.server
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from triton_calls import SLOW_SECONDS, TEXTS, direct_infer

IMAGES = ("example1.jpg", "example2.png", "human1.png")
# Which seed images each model's reference covers (fewer for the slow models).
COVERAGE = {"blip_caption": IMAGES, "kosmos2_caption": ("human1.png", "example1.jpg"),
            "trocr_ocr": ("example2.png", "example1.jpg"),
            "caption_tags": ("example1.jpg", "human1.png")}


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
