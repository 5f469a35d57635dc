"""Shared fixtures: tiny offline weights, seed images, and one real tritonserver serving the
whole model repository on them (started once per session, on free ports)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from i2tt_server.launcher import TritonServer, free_port
from i2tt_server.serve_options import ServeOptions
from i2tt_server.repository import chain, derive_repository, set_queue_delay
from pages import page_tools_missing
from testdata import REPOSITORY, ROOT, SEED_NAMES, configs, log_tail, seed_bytes

# Requests sent together must reliably land in one dynamic batch (tests read the statistics).
QUEUE_DELAY_US = 100_000


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """Tiny random weights for all models; `make test` builds them, else built here."""
    path = Path(os.environ.get("I2TT_TEST_WEIGHTS", ROOT / "build" / "test-weights"))
    from i2tt_server.runners import checkpoints
    from i2tt_server.weights_layout import missing_folders
    from i2tt_server.weights.synthetic import make_test_weights

    missing = missing_folders(path, checkpoints())
    if missing:
        make_test_weights(path, "tiny", missing, log=lambda m: None)
    return path


@pytest.fixture(scope="session")
def seed_images() -> dict[str, bytes]:
    return {name: seed_bytes(name) for name in SEED_NAMES}


def pytest_collection_modifyitems(config, items):
    # ocr_page needs system packages (.ci/run installs them): without them its tests skip
    # and the test server serves every other model.
    reason = page_tools_missing()
    if reason:
        for item in items:
            if "ocr_page" in item.nodeid:
                item.add_marker(pytest.mark.skip(reason=f"ocr_page: {reason}"))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# The integration suite runs once per device: on the CPU everywhere, and again with every
# model's device=cuda where torch sees a GPU (`-m gpu` selects that run alone).
DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not _cuda(), reason="no CUDA GPU visible to torch: "
                                        "the device=cuda run of the integration suite needs one")])]


def set_device(device: str):
    """Every model that runs a neural network of its own on ``device`` (ocr_page has none:
    Tesseract runs on the CPU and trocr_ocr reads its lines)."""
    from i2tt_server.runners import RUNNERS

    def edit(config) -> None:
        if config.name in RUNNERS and RUNNERS[config.name].checkpoints:
            config.parameters["device"].string_value = device
    return edit


@pytest.fixture(scope="session", params=DEVICES)
def triton(request, weights_dir, tmp_path_factory) -> TritonServer:
    """The running server: ``.grpc_url`` ("127.0.0.1:PORT"), ``.http_url``, ``.statistics()``,
    ``.device`` (where its models run: "cpu" or "cuda")."""
    device = request.param
    tmp = tmp_path_factory.mktemp(f"triton-{device}")
    served = None
    if page_tools_missing():
        served = [name for name in configs() if name != "ocr_page"]
    repository = derive_repository(REPOSITORY, tmp / "model_repository",
                                   chain(set_queue_delay(QUEUE_DELAY_US), set_device(device)),
                                   models=served)
    server = TritonServer(ServeOptions(repository, weights=weights_dir, http_port=free_port(),
                                       grpc_port=free_port(), metrics_port=free_port(),
                                       host="127.0.0.1", log_file=tmp / "tritonserver.log"))
    server.device = device
    # The launcher's own events (a model healed, a drain) go into the server's log too, so a
    # failed test that prints the log shows them in order with the server's lines.
    launcher_log = logging.FileHandler(server.log_file)
    launcher_log.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    # (the launcher's modules only: the unit tests run the models' code in this process)
    launcher_log.addFilter(lambda record: record.module in ("launcher", "watchdog", "shm",
                                                            "model_processes"))
    logging.getLogger("i2tt_server").addHandler(launcher_log)
    server.start(timeout=300)
    yield server
    exited = server.process.poll()  # before stop(): the server must have lived throughout
    server.stop()
    logging.getLogger("i2tt_server").removeHandler(launcher_log)
    launcher_log.close()
    if exited is not None:
        pytest.fail(f"tritonserver exited with code {exited} while the tests used it; the "
                    f"end of its log:\n{log_tail(server.log_file, 80)}")


@pytest.fixture(scope="session")
def grpc_client(triton):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton.grpc_url)
    yield client
    client.close()
