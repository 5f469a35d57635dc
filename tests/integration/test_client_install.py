"""Installing client/ must never pull torch or transformers (services install only it).

Needs the package index (PyPI or the configured mirror): pip resolves client/'s whole
dependency tree in a fresh venv without installing it (--dry-run --report). About 20-60 s.
"""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "client"
FORBIDDEN = {"torch", "transformers", "torchvision", "nvidia-pytriton", "i2tt-server"}


@pytest.mark.timeout(300)
def test_client_install_pulls_no_torch(tmp_path):
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    report = tmp_path / "report.json"
    done = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--quiet",
                           "--report", str(report), str(CLIENT)],
                          capture_output=True, text=True, timeout=240)
    if done.returncode != 0 and "No matching distribution" in done.stderr + done.stdout:
        pytest.skip(f"package index unreachable: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr
    names = {item["metadata"]["name"].lower().replace("_", "-")
             for item in json.loads(report.read_text())["install"]}
    assert {"i2tt-client", "tritonclient", "numpy", "pillow", "grpcio"} <= names
    assert not names & FORBIDDEN, sorted(names & FORBIDDEN)
