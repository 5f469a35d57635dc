"""A newer client against an older server: one whose models do not have the CONFIDENCE
output yet (a real tritonserver serving configs without it, as servers before the output
were). The client's typed calls still answer, with ``confidence`` None."""

from __future__ import annotations

import pytest

from i2tt_client import I2TTClient
from i2tt_server.launcher import TritonServer, free_port
from i2tt_server.repository import derive_repository
from i2tt_server.serve_options import ServeOptions
from testdata import REPOSITORY

pytestmark = pytest.mark.timeout(600)


def without_confidence(config) -> None:
    kept = [output for output in config.output if output.name != "CONFIDENCE"]
    del config.output[:]
    config.output.extend(kept)


@pytest.fixture(scope="module")
def older(weights_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("older")
    repository = derive_repository(REPOSITORY, tmp / "model_repository", without_confidence,
                                   models=["blip_caption", "trocr_ocr"])
    server = TritonServer(ServeOptions(
        repository, weights=weights_dir, http_port=free_port(), grpc_port=free_port(),
        metrics_port=free_port(), host="127.0.0.1", cache_size=0,
        log_file=tmp / "tritonserver.log"))
    server.start(timeout=300)
    yield server
    server.stop()


def test_typed_calls_answer_without_confidence_from_an_older_server(older, triton,
                                                                    seed_images):
    image = seed_images["example1.jpg"]
    with I2TTClient(triton.grpc_url) as current:
        expected = current.caption(image)
        assert expected.confidence is not None  # the served models have the output
    with I2TTClient(older.grpc_url) as client:
        first = client.caption(image)
        assert first.caption == expected.caption and first.confidence is None
        # learnt once per model: later calls do not ask for it (a refusal is sent again at
        # once, so only the client's own record shows it)
        assert client.settings.absent_outputs == {"blip_caption": {"CONFIDENCE"}}
        assert [c.caption for c in client.caption([image, image])] == [expected.caption] * 2
        line = client.ocr(image)
        assert line.confidence is None and isinstance(line.text, str)
