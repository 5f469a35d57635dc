"""ocr_page's BlsLineReader with a stand-in for the business-logic-scripting surface of
triton_python_backend_utils (which exists only inside the backend stub): crops go out in
batched requests of ``per_request``, one at a time, asking for TEXT and CONFIDENCE, and
their readings come back in order; a request the line model sheds is sent again, any other
error fails the call."""

from __future__ import annotations

import types

import numpy as np
import pytest

from i2tt_server.pages_adapter import BlsLineReader
from i2tt_server.runners.ocr_page import Reading


def fake_bls(answer):
    """``answer(crops) -> list of (text, confidence) | ("error", code, message)`` plays the
    line model; every request's crops are recorded in ``pb.sent``."""
    pb = types.SimpleNamespace(sent=[])

    class TritonError:
        UNAVAILABLE, INVALID_ARG = "UNAVAILABLE", "INVALID_ARG"

        def __init__(self, code, message):
            self._code, self._message = code, message

        def code(self):
            return self._code

        def message(self):
            return self._message

    class Response:
        def __init__(self, outputs=None, error=None):
            self.outputs, self._error = outputs, error

        def has_error(self):
            return self._error is not None

        def error(self):
            return self._error

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    class InferenceRequest:
        def __init__(self, model_name, inputs, requested_output_names):
            assert model_name == "trocr_ocr"
            assert requested_output_names == ["TEXT", "CONFIDENCE"]
            (image,) = inputs
            assert image.name == "IMAGE" and image.array.shape[1:] == (1,)
            self.crops = list(image.array[:, 0])

        def exec(self):
            pb.sent.append(self.crops)
            result = answer(self.crops)
            if isinstance(result, tuple):
                return Response(error=TritonError(*result[1:]))
            # as trocr_ocr answers: TEXT as bytes, CONFIDENCE as float32, [n, 1] each
            return Response({"TEXT": np.array([[t.encode()] for t, _ in result], dtype=np.object_),
                             "CONFIDENCE": np.array([[c] for _, c in result], dtype=np.float32)})

    pb.TritonError, pb.Tensor, pb.InferenceRequest = TritonError, Tensor, InferenceRequest
    pb.get_output_tensor_by_name = lambda response, name: Tensor(name, response.outputs[name])
    return pb


def read(crops):
    return [(crop.decode().upper(), 1 / len(crop)) for crop in crops]


def test_crops_go_in_batched_requests_and_come_back_in_order():
    pb = fake_bls(read)
    crops = [f"line {i}".encode() for i in range(20)]
    readings = BlsLineReader(pb, "trocr_ocr", per_request=8)(crops)
    assert readings == [(f"LINE {i}", pytest.approx(1 / len(f"line {i}"))) for i in range(20)]
    assert all(isinstance(r, Reading) and type(r.confidence) is float for r in readings)
    assert [len(sent) for sent in pb.sent] == [8, 8, 4]
    assert BlsLineReader(pb, "trocr_ocr")([]) == []


def test_a_shed_request_is_sent_again():
    refusals = iter([("error", "UNAVAILABLE", "Exceeds maximum queue size")])
    pb = fake_bls(lambda crops: next(refusals, None) or read(crops))
    assert BlsLineReader(pb, "trocr_ocr", per_request=4)([b"a", b"b"]) == [("A", 1.0), ("B", 1.0)]
    assert pb.sent == [[b"a", b"b"], [b"a", b"b"]]


@pytest.mark.parametrize("answer,message", [
    (lambda crops: ("error", "INVALID_ARG", "IMAGE is not a decodable image"),
     "trocr_ocr: IMAGE is not a decodable image"),
    (lambda crops: read(crops)[:-1], "trocr_ocr answered 1 texts and 1 confidences for 2 lines"),
])
def test_other_errors_fail_the_call_at_once(answer, message):
    pb = fake_bls(answer)
    with pytest.raises(RuntimeError, match=message):
        BlsLineReader(pb, "trocr_ocr")([b"a", b"b"])
    assert len(pb.sent) == 1
