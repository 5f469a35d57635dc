"""Opt-in: with the real public checkpoints in $I2TT_REAL_WEIGHTS (from
`i2tt-server fetch-weights`), the served models answer what ../shared/seed_images/expected.json
records. Skipped where they are absent (always on offline machines)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import SEED_IMAGES
from i2tt_server.launcher import TritonServer, free_port
from i2tt_server.repository import derive_repository, set_parameter
from triton_calls import infer

ROOT = Path(__file__).resolve().parents[2]
REAL = Path(os.environ.get("I2TT_REAL_WEIGHTS", "/nonexistent"))
FOLDERS = {"Salesforce/blip-image-captioning-base": "blip-base",
           "Salesforce/blip-image-captioning-large": "blip-large",
           "microsoft/kosmos-2-patch14-224": "kosmos-2"}
CASES = json.loads((SEED_IMAGES / "expected.json").read_text())["cases"]

pytestmark = pytest.mark.skipif(
    not all((REAL / f / "config.json").is_file() for f in FOLDERS.values()),
    reason="set I2TT_REAL_WEIGHTS to a folder with the real checkpoints to run")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['model']}:{c['image']}:{c['prompt']}")
def test_seed_caption(case, tmp_path):
    folder = FOLDERS[case["model"]]
    model = "kosmos2_caption" if folder == "kosmos-2" else "blip_caption"
    edit = set_parameter("blip_caption", "weights", folder)
    repository = derive_repository(ROOT / "model_repository", tmp_path / "repo", edit, [model])
    # raw output: the recorded captions keep BLIP-large's "arafed"
    if model == "blip_caption":
        derive_repository(repository, tmp_path / "repo2",
                          set_parameter(model, "clean_caption", "false"))
        repository = tmp_path / "repo2"
    with TritonServer(repository, weights=REAL, http_port=free_port(), grpc_port=free_port(),
                      metrics_port=free_port(), host="127.0.0.1") as server:
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            image = (SEED_IMAGES / case["image"]).read_bytes()
            prompt = [case["prompt"]] if case["prompt"] else None
            (row,) = infer(client, model, IMAGE=[image], PROMPT=prompt)
    assert row["CAPTION"] == case["text"]
