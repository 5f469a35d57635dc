"""The in-flight path behind the Triton glue (batching: inflight), with the stand-in for
pb_utils and requests that have response senders, around T5Tagger on tiny weights: the
answers equal the static path's, every request gets exactly one final response, bad
requests fail alone, and callers that left (cancelled or past their timeout) are dropped.
The real server runs the same path in tests/integration/test_inflight.py."""

from __future__ import annotations

import json
import threading

import pytest

from i2tt_server.triton_adapter import TritonModel
from test_triton_adapter import TEXTS, Tagger, fake_pb_utils, request, tags

FINAL = 1


class Sender:
    def __init__(self):
        self.responses, self.flags = [], []
        self.done = threading.Event()

    def send(self, response=None, flags=0):
        self.responses.append(response)
        self.flags.append(flags)
        if flags == FINAL:
            self.done.set()


class SentRequest(dict):
    """A request as the backend hands it to a model that answers through its sender."""

    def __init__(self, inputs, cancelled=False, timeout_us=0):
        super().__init__(inputs)
        self.sender, self.cancelled, self.timeout_us = Sender(), cancelled, timeout_us

    def get_response_sender(self):
        return self.sender

    def is_cancelled(self):
        return self.cancelled

    def timeout(self):
        return self.timeout_us

    def answer(self, seconds=120.0):
        assert self.sender.done.wait(seconds), "no final response"
        assert self.sender.flags == [FINAL], "exactly one response, and final"
        return self.sender.responses[0]


def make(weights_dir, **params):
    pb = fake_pb_utils()
    pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL
    model = Tagger()
    values = {"weights_root": str(weights_dir), "warmup": "false", **params}
    config = {"parameters": {k: {"string_value": v} for k, v in values.items()}}
    model.setup(pb, {"model_config": json.dumps(config), "model_instance_kind": "CPU"})
    return model


@pytest.fixture(scope="module")
def static(weights_dir):
    model = make(weights_dir)
    yield model
    model.finalize()


@pytest.fixture(scope="module")
def inflight(weights_dir):
    model = make(weights_dir, batching="inflight", max_running="4")
    yield model
    model.finalize()


def test_answers_equal_the_static_path_and_bad_requests_fail_alone(static, inflight):
    pb = inflight.pb
    alone = [tags(static.execute([request(pb, TEXT=[t])])[0]) for t in TEXTS]
    requests = [SentRequest(request(pb, TEXT=[TEXTS[0]])), SentRequest(request(pb, TEXT=[b""])),
                SentRequest(request(pb, TEXT=[TEXTS[1], TEXTS[2]])), SentRequest({})]
    assert inflight.execute(requests) is None
    answers = [r.answer() for r in requests]
    assert answers[0].error is None and tags(answers[0]) == alone[0]
    assert answers[2].error is None and tags(answers[2]) == alone[1] + alone[2]
    for index, message in ((1, "TEXT is empty"), (3, "TEXT is required")):
        assert answers[index].error.code == pb.TritonError.INVALID_ARG
        assert message in answers[index].error.message


def test_more_requests_than_places_all_answered_in_batches_that_wait_for_room(static, inflight):
    pb = inflight.pb
    alone = {t: tags(static.execute([request(pb, TEXT=[t])])[0]) for t in TEXTS}
    texts = [TEXTS[i % 3] for i in range(10)]
    batches = [[SentRequest(request(pb, TEXT=[t])) for t in texts[:6]],
               [SentRequest(request(pb, TEXT=[t])) for t in texts[6:]]]
    for batch in batches:  # execute returns once the 4 places have room again
        inflight.execute(batch)
        assert sum(inflight.inflight.scheduler.load) < 4
    for text, req in zip(texts, batches[0] + batches[1]):
        answer = req.answer()
        assert answer.error is None and tags(answer) == alone[text]


def test_a_caller_that_leaves_mid_generation_is_answered_cancelled(inflight):
    pb = inflight.pb
    steps = []
    leaving = SentRequest(request(pb, TEXT=[TEXTS[0]]))
    staying = SentRequest(request(pb, TEXT=[TEXTS[1]]))
    real_step = inflight.inflight.scheduler.generator.step

    def step(states):
        steps.append(len(states))
        if len(steps) == 2:
            leaving.cancelled = True  # the gRPC caller gave up after the first step
        return real_step(states)

    inflight.inflight.scheduler.generator.step = step
    try:
        inflight.execute([leaving, staying])
        assert leaving.answer().error.code == pb.TritonError.CANCELLED
        assert staying.answer().error is None
    finally:
        inflight.inflight.scheduler.generator.step = real_step
    assert steps[0] == 2 and len(steps) > 3 and steps[3] == 1, steps


def test_a_request_past_its_timeout_is_dropped_and_a_queued_cancel_costs_nothing(inflight):
    pb = inflight.pb
    expired = SentRequest(request(pb, TEXT=[TEXTS[0]]), timeout_us=1)
    gone = SentRequest(request(pb, TEXT=[TEXTS[1]]), cancelled=True)
    inflight.execute([expired, gone])
    assert expired.answer().error.code == pb.TritonError.CANCELLED
    assert gone.answer().error.code == pb.TritonError.CANCELLED


def test_a_failing_step_fails_its_requests_and_the_loop_serves_on(inflight):
    pb = inflight.pb
    real_step = inflight.inflight.scheduler.generator.step

    def broken(states):
        raise RuntimeError("device lost")

    inflight.inflight.scheduler.generator.step = broken
    try:
        failing = SentRequest(request(pb, TEXT=[TEXTS[0]]))
        inflight.execute([failing])
        error = failing.answer().error
        assert error.code == pb.TritonError.INTERNAL and "device lost" in error.message
    finally:
        inflight.inflight.scheduler.generator.step = real_step
    later = SentRequest(request(pb, TEXT=[TEXTS[2]]))
    inflight.execute([later])
    assert later.answer().error is None


def test_batching_parameter_is_checked(weights_dir):
    with pytest.raises(ValueError, match="batching must be one of"):
        make(weights_dir, batching="continuous")


def test_a_runner_without_a_stepped_generator_refuses_inflight(weights_dir):
    from i2tt_server.runners import TrOCRReader
    from i2tt_server.runners.generative import GenerativeRunner

    class PlainReader(TrOCRReader):  # a runner that has only the static path
        stepped = GenerativeRunner.stepped

    class Reader(TritonModel):
        runner_class = PlainReader

    pb = fake_pb_utils()
    config = {"parameters": {k: {"string_value": v} for k, v in
                             {"weights_root": str(weights_dir), "warmup": "false",
                              "batching": "inflight"}.items()}}
    with pytest.raises(NotImplementedError, match="no in-flight path"):
        Reader().setup(pb, {"model_config": json.dumps(config), "model_instance_kind": "CPU"})
