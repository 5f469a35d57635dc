"""Shared fixtures: tiny offline weights, seed images, and one real tritonserver serving the
whole model repository on them (started once per session, on free ports)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from i2tt_server.launcher import TritonServer, free_port
from i2tt_server.repository import chain, derive_repository, set_queue_delay
from testdata import REPOSITORY, ROOT, SEED_NAMES, seed_bytes

# Requests sent together must reliably land in one dynamic batch (tests read the statistics).
QUEUE_DELAY_US = 100_000


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """Tiny random weights for all models; `make test` builds them, else built here."""
    path = Path(os.environ.get("I2TT_TEST_WEIGHTS", ROOT / "build" / "test-weights"))
    from i2tt_server.runners import checkpoints
    from i2tt_server.weights.layout import missing_folders
    from i2tt_server.weights.synthetic import make_test_weights

    missing = missing_folders(path, checkpoints())
    if missing:
        make_test_weights(path, "tiny", missing, log=lambda m: None)
    return path


@pytest.fixture(scope="session")
def seed_images() -> dict[str, bytes]:
    return {name: seed_bytes(name) for name in SEED_NAMES}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# The integration suite runs once per device: on the CPU everywhere, and again with every
# model's device=cuda where torch sees a GPU (`-m gpu` selects that run alone).
DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not _cuda(), reason="no CUDA GPU visible to torch: "
                                        "the device=cuda run of the integration suite needs one")])]


def set_device(device: str):
    def edit(config) -> None:
        if config.backend == "python":
            config.parameters["device"].string_value = device
    return edit


@pytest.fixture(scope="session", params=DEVICES)
def triton(request, weights_dir, tmp_path_factory) -> TritonServer:
    """The running server: ``.grpc_url`` ("127.0.0.1:PORT"), ``.http_url``, ``.statistics()``,
    ``.device`` (where its models run: "cpu" or "cuda")."""
    device = request.param
    tmp = tmp_path_factory.mktemp(f"triton-{device}")
    repository = derive_repository(REPOSITORY, tmp / "model_repository",
                                   chain(set_queue_delay(QUEUE_DELAY_US), set_device(device)))
    server = TritonServer(repository, weights=weights_dir, http_port=free_port(),
                          grpc_port=free_port(), metrics_port=free_port(), host="127.0.0.1",
                          log_file=tmp / "tritonserver.log")
    server.device = device
    server.start(timeout=300)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def grpc_client(triton):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton.grpc_url)
    yield client
    client.close()
