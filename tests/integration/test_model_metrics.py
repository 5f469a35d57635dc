"""The models' own metrics (i2tt_*) on the running server's metrics port, after real
requests: rejections by reason, generated tokens, items per execution, decode time."""

from __future__ import annotations

import pytest
import tritonclient.grpc as grpcclient

from i2tt_server.metrics import DECODE, GENERATED, ITEMS, NAMES, REJECTED
from promtext import parse_samples
from triton_calls import infer, scrape, value

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def after_requests(triton, grpc_client, seed_images):
    before = parse_samples(scrape(triton))
    infer(grpc_client, "blip_caption", IMAGE=[seed_images["example1.jpg"]])
    infer(grpc_client, "t5_tags", TEXT=["a dog on a beach", "two cats"])
    for bad in (b"definitely not an image", b""):
        with pytest.raises(grpcclient.InferenceServerException):
            infer(grpc_client, "blip_caption", IMAGE=[bad])
    return before, parse_samples(scrape(triton))


def test_the_models_publish_their_metrics(after_requests):
    before, after = after_requests

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew(REJECTED, model="blip_caption", reason="undecodable") == 1
    assert grew(REJECTED, model="blip_caption", reason="empty") == 1
    # tiny random weights never stop early: every item generates max_new_tokens tokens
    assert grew(GENERATED, model="t5_tags") > 0
    assert grew(ITEMS + "_count", model="t5_tags") == 1  # one execution ...
    assert grew(ITEMS + "_sum", model="t5_tags") == 2  # ... of two items
    assert grew(DECODE + "_count", model="blip_caption") >= 1
    assert grew(DECODE + "_sum", model="blip_caption") > 0
    assert value(after, DECODE + "_count", model="t5_tags") == 0  # no images there


def test_every_model_declares_every_family(after_requests):
    _, after = after_requests
    names = {n for n, _, _ in after}
    for name in NAMES:
        assert {name, name + "_count"} & names, name
    models = {l.get("model") for n, l, _ in after if n == REJECTED}
    assert {"blip_caption", "kosmos2_caption", "trocr_ocr", "t5_tags"} <= models
