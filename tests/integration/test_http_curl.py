"""The README's curl call over Triton's HTTP API, run exactly as the README writes it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from testdata import ROOT
from triton_calls import direct_infer


def readme_block(marker: str) -> str:
    """The README's ```sh block that contains ``marker``."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if marker in b]
    return block


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_call_of_caption_tags(triton, grpc_client, seed_images, tmp_path):
    script = readme_block("Inference-Header-Content-Length")
    (tmp_path / "photo.jpg").write_bytes(seed_images["example1.jpg"])
    host = triton.http_url.removeprefix("http://")
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "I2TT_HTTP": host})
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert lines[:2] == ["server ready", "caption_tags ready"]
    answer = json.loads(lines[-1])
    outputs = {o["name"]: o for o in answer["outputs"]}
    want = direct_infer(grpc_client, "caption_tags", "IMAGE", seed_images["example1.jpg"])
    assert outputs["CAPTION"]["data"] == [want["CAPTION"]]
    assert [t for t in outputs["TAGS"]["data"] if t] == want["TAGS"]
