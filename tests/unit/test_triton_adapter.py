"""The Triton glue (TritonModel) with a small stand-in for triton_python_backend_utils,
which exists only inside the backend stub, around a real runner on tiny weights."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from i2tt_server.runners import T5Tagger, TrOCRReader
from i2tt_server.triton_adapter import TritonModel


def fake_pb_utils():
    """Just the surface TritonModel uses, behaving as the real module does."""
    pb = types.SimpleNamespace()

    class TritonError:
        INVALID_ARG, INTERNAL, UNAVAILABLE, CANCELLED = \
            "INVALID_ARG", "INTERNAL", "UNAVAILABLE", "CANCELLED"

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

    def broken(items, confidence=False):
        raise RuntimeError("device lost")

    monkeypatch.setattr(model.runner, "infer", broken)
    responses = model.execute([request(pb, TEXT=[TEXTS[0]]), request(pb, TEXT=[b""])])
    assert [r.error.code for r in responses] == [pb.TritonError.INTERNAL, pb.TritonError.INVALID_ARG]
    assert "device lost" in responses[0].error.message


POISON = b"a text that breaks the model"


def test_a_failing_request_is_bisected_out_and_the_others_answered(model, monkeypatch):
    pb = model.pb
    alone = [tags(model.execute([request(pb, TEXT=[t])])[0]) for t in TEXTS]
    real_infer, calls = model.runner.infer, []

    def infer(items, confidence=False):
        calls.append(len(items))
        if POISON.decode() in items:
            raise IndexError("index out of range in self")
        return real_infer(items, confidence)

    monkeypatch.setattr(model.runner, "infer", infer)
    texts = [TEXTS[0], TEXTS[1], POISON, TEXTS[2], TEXTS[0], TEXTS[1], TEXTS[2]]
    responses = model.execute([request(pb, TEXT=[t]) for t in texts])
    for text, response in zip(texts, responses):
        if text == POISON:
            assert response.error.code == pb.TritonError.INTERNAL
            assert "index out of range" in response.error.message
        else:
            assert response.error is None
            assert tags(response) == alone[TEXTS.index(text)]
    assert calls[0] == len(texts)  # one batched call first: no cost when nothing fails
    # halving down to the culprit: two calls per level (log2 of 7 requests, rounded up),
    # not one call per request
    assert len(calls) <= 1 + 2 * 3 and sum(calls) < len(texts) * 3


def test_a_multi_item_request_fails_as_a_whole_and_alone(model, monkeypatch):
    pb = model.pb
    real_infer = model.runner.infer
    monkeypatch.setattr(model.runner, "infer", lambda items, confidence=False: (
        (_ for _ in ()).throw(RuntimeError("boom")) if POISON.decode() in items
        else real_infer(items, confidence)))
    responses = model.execute([request(pb, TEXT=[TEXTS[0], POISON]), request(pb, TEXT=[TEXTS[1]])])
    assert responses[0].error.code == pb.TritonError.INTERNAL
    assert responses[1].error is None and tags(responses[1])


class CancellableRequest(dict):
    def __init__(self, inputs, cancelled):
        super().__init__(inputs)
        self._cancelled = cancelled

    def is_cancelled(self):
        return self._cancelled


def test_requests_whose_caller_left_get_no_work(model, monkeypatch):
    pb = model.pb
    real_infer, seen = model.runner.infer, []

    def infer(items, confidence=False):
        seen.extend(items)
        return real_infer(items, confidence)

    monkeypatch.setattr(model.runner, "infer", infer)
    responses = model.execute([CancellableRequest(request(pb, TEXT=[TEXTS[0]]), True),
                               CancellableRequest(request(pb, TEXT=[TEXTS[1]]), False)])
    assert responses[0].error.code == pb.TritonError.CANCELLED
    assert responses[1].error is None and tags(responses[1])
    assert seen == [TEXTS[1].decode()]
    # all cancelled: no inference at all
    seen.clear()
    responses = model.execute([CancellableRequest(request(pb, TEXT=[TEXTS[2]]), True)])
    assert responses[0].error.code == pb.TritonError.CANCELLED and seen == []


class AskingRequest(dict):
    """A request that names the outputs it wants, as Triton hands them to the backend (a
    caller that names none is handed every output of the config)."""

    def __init__(self, inputs, outputs):
        super().__init__(inputs)
        self.outputs = outputs

    def requested_output_names(self):
        return list(self.outputs)


class Reader(TritonModel):
    runner_class = TrOCRReader


def test_each_request_gets_the_outputs_it_asked_for_and_confidence_only_costs_when_asked(
        weights_dir, seed_images, monkeypatch):
    pb = fake_pb_utils()
    model = Reader()
    config = {"parameters": {"weights_root": {"string_value": str(weights_dir)},
                             "warmup": {"string_value": "false"}}}
    model.setup(pb, {"model_config": json.dumps(config), "model_instance_kind": "CPU"})
    scored, generate = [], model.runner.generate

    def spy(model_, confidence=False, **kwargs):
        scored.append(confidence)
        return generate(model_, confidence=confidence, **kwargs)

    monkeypatch.setattr(model.runner, "generate", spy)
    images = list(seed_images.values())
    plain = model.execute([AskingRequest(request(pb, IMAGE=[i]), ["TEXT"]) for i in images])
    assert scored == [False] and all(set(r.outputs()) == {"TEXT"} for r in plain)
    asked = [["TEXT"], ["TEXT", "CONFIDENCE"], ["CONFIDENCE"]]
    mixed = model.execute([AskingRequest(request(pb, IMAGE=[i]), names)
                           for i, names in zip(images, asked)])
    assert scored == [False, True]  # one batch, scored once for the requests that asked
    assert [set(r.outputs()) for r in mixed] == [set(names) for names in asked]
    assert mixed[0].outputs()["TEXT"].tolist() == plain[0].outputs()["TEXT"].tolist()
    assert mixed[1].outputs()["TEXT"].tolist() == plain[1].outputs()["TEXT"].tolist()
    confidences = [r.outputs()["CONFIDENCE"] for r in mixed[1:]]
    assert all(c.dtype == np.float32 and c.shape == (1, 1) and 0 < c[0, 0] <= 1
               for c in confidences)
    model.finalize()
