"""What a caller's deadline gets, on a real tritonserver whose queue is slow to release a
request: blip_caption with a 12 s queue delay (a lone request, or the rest of a batch,
waits 12 s before it runs: longer than the 10 s default timeout the configs shipped
before), served by `i2tt-server serve` with the shipped queue policy.

A control server is the same with a 1 s default queue timeout, the kind of default the
configs had before (10 s): it checks the Triton rule the policy rests on, that a request's
timeout only lowers the default and never raises it.
"""

from __future__ import annotations

import threading
import time

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from i2tt_server.repository import chain, derive_repository, find_repository, set_queue_delay
from served import Served
from triton_calls import string_input

MODEL = "blip_caption"
QUEUE_DELAY_S = 12.0
CONTROL_TIMEOUT_S = 1.0


def default_timeout(seconds: float):
    def edit(config) -> None:
        config.dynamic_batching.default_queue_policy.default_timeout_microseconds = int(seconds * 1e6)
    return edit


def serve(weights_dir, folder, edit) -> Served:
    repository = derive_repository(find_repository(), folder / "repository", edit, models=[MODEL])
    return Served(weights_dir, folder / "serve.log", "--model-repository", str(repository),
                  "--models", MODEL, "--batching", "cpu").wait_ready()


@pytest.fixture(scope="module")
def slow_queue(weights_dir, tmp_path_factory):
    server = serve(weights_dir, tmp_path_factory.mktemp("deadlines"),
                   set_queue_delay(int(QUEUE_DELAY_S * 1e6)))
    yield server
    server.close()


@pytest.fixture(scope="module")
def control(weights_dir, tmp_path_factory):
    server = serve(weights_dir, tmp_path_factory.mktemp("control"),
                   chain(set_queue_delay(int(QUEUE_DELAY_S * 1e6)), default_timeout(CONTROL_TIMEOUT_S)))
    yield server
    server.close()


def call(server: Served, image: bytes, deadline: float | None) -> tuple[str, float, str]:
    """(status, seconds, message) of one blip_caption call; a deadline is sent as gRPC's and
    as the request's timeout, as the i2tt client sends it."""
    started = time.monotonic()
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        try:
            extra = {} if deadline is None else {"client_timeout": deadline,
                                                  "timeout": int(deadline * 1e6)}
            client.infer(MODEL, [string_input("IMAGE", [image])], **extra)
            return "OK", time.monotonic() - started, ""
        except InferenceServerException as exc:
            return exc.status(), time.monotonic() - started, exc.message()


def concurrently(server: Served, image: bytes, count: int, deadline: float | None) -> list:
    results: list = [None] * count

    def one(index):
        results[index] = call(server, image, deadline)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def executed(server: Served) -> int:
    return int(server.statistics(MODEL)["inference_stats"]["success"]["count"])


def test_a_deadline_longer_than_the_old_default_is_served_after_a_slow_queue(slow_queue, control,
                                                                              seed_images):
    image = seed_images["example1.jpg"]
    status, seconds, message = call(slow_queue, image, deadline=30.0)
    assert status == "OK", message
    assert seconds >= QUEUE_DELAY_S - 0.5  # it did wait in the queue
    # Triton's rule: with a 1 s default, the same 30 s deadline is cut to 1 s
    status, seconds, message = call(control, image, deadline=30.0)
    assert status == "StatusCode.UNAVAILABLE" and "timeout" in message.lower(), (status, message)
    assert seconds < QUEUE_DELAY_S


def test_callers_without_a_deadline_beyond_the_batch_size_are_all_answered(slow_queue, control,
                                                                           seed_images):
    """Six callers, batches of four: the last two wait out the queue delay."""
    image = seed_images["human1.png"]
    results = concurrently(slow_queue, image, 6, deadline=None)
    assert [status for status, _, _ in results] == ["OK"] * 6, results
    assert sum(seconds >= QUEUE_DELAY_S - 0.5 for _, seconds, _ in results) >= 2, results
    # before: the ones that waited longer than the default were refused for waiting
    refused = [r for r in concurrently(control, image, 6, deadline=None)
               if r[0] == "StatusCode.UNAVAILABLE" and "timeout" in r[2].lower()]
    assert len(refused) >= 2, refused


def test_a_short_deadline_is_honoured_and_costs_no_work_once_gone(slow_queue, seed_images):
    image = seed_images["example2.png"]
    before = executed(slow_queue)
    status, seconds, message = call(slow_queue, image, deadline=1.0)
    assert status in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"), (status, message)
    assert seconds < QUEUE_DELAY_S
    time.sleep(QUEUE_DELAY_S + 1.0)  # past the moment its batch would have run
    assert executed(slow_queue) == before, "the model ran for a caller that had gone"
