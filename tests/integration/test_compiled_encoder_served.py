"""``compile_encoder: true`` on the real server: trocr_ocr's encoder is compiled inside its
model process (the backend's stub, where compile workers could not start) before the
model reports ready, and the lines it reads are the eager runner's (float32, where
tests/unit/test_compiled_encoder.py finds every answer identical)."""

from __future__ import annotations

import io
import os

import pytest
import tritonclient.grpc as grpcclient

from i2tt_server.launcher import TritonServer, free_port
from i2tt_server.repository import chain, derive_repository, set_parameter
from i2tt_server.runners import TrOCRReader
from i2tt_server.serve_options import ServeOptions
import pages
from testdata import REPOSITORY, cpp_compiler_missing
from triton_calls import infer

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(cpp_compiler_missing(),
                                 reason="torch.compile on a CPU needs a C++ compiler")]


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def compiled(weights_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compiled")
    repository = derive_repository(
        REPOSITORY, tmp / "model_repository",
        chain(set_parameter("trocr_ocr", "compile_encoder", "true"),
              set_parameter("trocr_ocr", "dtype", "float32")), models=["trocr_ocr"])
    server = TritonServer(ServeOptions(repository, weights=weights_dir, http_port=free_port(),
                                       grpc_port=free_port(), metrics_port=free_port(),
                                       host="127.0.0.1", log_file=tmp / "tritonserver.log",
                                       cache_size=0, scheduling="static"))
    # where the model process writes what it compiles, to see that it did before ready
    inductor = tmp / "inductor"
    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor)
    try:
        server.start(timeout=300)
    finally:
        if saved is None:
            del os.environ["TORCHINDUCTOR_CACHE_DIR"]
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved
    server.compiled_kernels = sorted(inductor.rglob("*.so"))  # as soon as it is ready
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield server, client
    client.close()
    server.stop()


def test_compiled_before_ready_and_answers_as_eager(compiled, weights_dir):
    server, client = compiled
    assert server.compiled_kernels, "no kernels compiled before the model was ready"
    eager = TrOCRReader.from_parameters({"weights_root": str(weights_dir), "warmup": "false",
                                         "device": "cpu", "dtype": "float32"})
    lines = pages.text_lines(6)
    want = [answer["TEXT"] for answer in eager.infer(lines)]
    assert [infer(client, "trocr_ocr", IMAGE=[png(line)])[0]["TEXT"] for line in lines] == want
    # and a batch of them in one request
    assert [a["TEXT"] for a in infer(client, "trocr_ocr", IMAGE=[png(l) for l in lines])] == want
