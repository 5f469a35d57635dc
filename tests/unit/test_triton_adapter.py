"""The Triton glue (TritonModel) with a small stand-in for triton_python_backend_utils,
which exists only inside the backend stub, around a real runner on tiny weights."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from i2tt_server.runners import T5Tagger
from i2tt_server.triton_adapter import TritonModel


def fake_pb_utils():
    """Just the surface TritonModel uses, behaving as the real module does."""
    pb = types.SimpleNamespace()

    class TritonError:
        INVALID_ARG, INTERNAL, UNAVAILABLE = "INVALID_ARG", "INTERNAL", "UNAVAILABLE"

        def __init__(self, message, code=INTERNAL):
            self.message, self.code = message, code

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    class InferenceResponse:
        def __init__(self, output_tensors=None, error=None):
            self.output_tensors, self.error = output_tensors or [], error

        def outputs(self):
            return {t.name: t.array for t in self.output_tensors}

    def get_input_tensor_by_name(request, name):
        return request.get(name)

    pb.TritonError, pb.Tensor, pb.InferenceResponse = TritonError, Tensor, InferenceResponse
    pb.get_input_tensor_by_name = get_input_tensor_by_name
    return pb


def request(pb, **inputs):
    return {name: pb.Tensor(name, np.array(values, dtype=np.object_).reshape(-1, 1))
            for name, values in inputs.items()}


class Tagger(TritonModel):
    runner_class = T5Tagger


@pytest.fixture(scope="module")
def model(weights_dir):
    pb = fake_pb_utils()
    instance = Tagger()
    config = {"parameters": {"weights_root": {"string_value": str(weights_dir)},
                             "warmup": {"string_value": "false"}}}
    instance.setup(pb, {"model_config": json.dumps(config), "model_instance_kind": "CPU"})
    yield instance
    instance.finalize()


TEXTS = [b"a dog on a beach", b"a red car in a city street", b"two cats on a sofa"]


def tags(response) -> list[list[str]]:
    return [[t.decode() for t in row if t] for row in response.outputs()["TAGS"]]


def test_one_response_per_request_in_order_bad_request_alone(model):
    pb = model.pb
    alone = [tags(model.execute([request(pb, TEXT=[t])])[0]) for t in TEXTS]
    requests = [request(pb, TEXT=[TEXTS[0]]), request(pb, TEXT=[b""]),
                request(pb, TEXT=[TEXTS[1], TEXTS[2]]), request(pb, TEXT=[b"\xff\xfe"]),
                {}]  # no TEXT at all
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    assert responses[0].error is None and tags(responses[0]) == alone[0]
    assert responses[2].error is None and tags(responses[2]) == alone[1] + alone[2]
    for index, message in ((1, "TEXT is empty"), (3, "not valid UTF-8"), (4, "TEXT is required")):
        error = responses[index].error
        assert error.code == pb.TritonError.INVALID_ARG
        assert error.message.startswith("t5_tags: ") and message in error.message
    assert len({tuple(map(tuple, a)) for a in alone}) > 1, "tiny weights must differ per input"


def test_a_failing_inference_never_raises_out_of_execute(model, monkeypatch):
    pb = model.pb

    def broken(items):
        raise RuntimeError("device lost")

    monkeypatch.setattr(model.runner, "infer", broken)
    responses = model.execute([request(pb, TEXT=[TEXTS[0]]), request(pb, TEXT=[b""])])
    assert [r.error.code for r in responses] == [pb.TritonError.INTERNAL, pb.TritonError.INVALID_ARG]
    assert "device lost" in responses[0].error.message
