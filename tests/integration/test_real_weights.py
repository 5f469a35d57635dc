"""Opt-in: with the real public checkpoints in $I2TT_REAL_WEIGHTS (from
`i2tt-server fetch-weights`), the served models answer what tests/data/expected.json
records. Skipped where they are absent (always on offline machines)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from i2tt_server.launcher import TritonServer, free_port
from i2tt_server.serve_options import ServeOptions
from i2tt_server.repository import derive_repository, set_parameter
from i2tt_server.runners import checkpoints, runner_for_folder
from testdata import REPOSITORY, expected_cases, seed_bytes
from triton_calls import infer

REAL = Path(os.environ.get("I2TT_REAL_WEIGHTS", "/nonexistent"))
CASES = expected_cases()
# public checkpoint -> the weights folder that holds it
FOLDERS = {hub: folder for folder, hub in checkpoints().items()}

pytestmark = pytest.mark.skipif(
    not all((REAL / FOLDERS[c["model"]] / "config.json").is_file() for c in CASES),
    reason="set I2TT_REAL_WEIGHTS to a folder with the real checkpoints to run")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['model']}:{c['image']}:{c['prompt']}")
def test_seed_caption(case, tmp_path):
    folder = FOLDERS[case["model"]]
    model = runner_for_folder(folder).name
    edit = set_parameter(model, "weights", folder)
    repository = derive_repository(REPOSITORY, tmp_path / "repo", edit, [model])
    # raw output: the recorded captions keep BLIP-large's "arafed"
    if model == "blip_caption":
        derive_repository(repository, tmp_path / "repo2",
                          set_parameter(model, "clean_caption", "false"))
        repository = tmp_path / "repo2"
    options = ServeOptions(repository, weights=REAL, http_port=free_port(),
                           grpc_port=free_port(), metrics_port=free_port(), host="127.0.0.1")
    with TritonServer(options) as server:
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            image = seed_bytes(case["image"])
            prompt = [case["prompt"]] if case["prompt"] else None
            (row,) = infer(client, model, IMAGE=[image], PROMPT=prompt)
    assert row["CAPTION"] == case["text"]
