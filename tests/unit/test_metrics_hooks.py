"""The models' metrics: reasons for refused inputs, the token count, and the adapter's
hooks, with a stand-in for pb_utils' MetricFamily that records what Triton would export."""

from __future__ import annotations

import json

import pytest

from i2tt_server.metrics import (DECODE, GENERATED, INTERNAL, ITEMS, REJECTED, ModelMetrics, NoMetrics,
                                 rejection_reason)
from i2tt_server.runners import BlipCaptioner, T5Tagger
from i2tt_server.runners.generative import count_new_tokens
from i2tt_server.triton_adapter import TritonModel
from test_triton_adapter import fake_pb_utils, request


@pytest.mark.parametrize("message, reason", [
    ("IMAGE is required", "missing"),
    ("IMAGE is 30000000 bytes, over the 20971520-byte limit", "too_large"),
    ("IMAGE refused as a decompression bomb: ...", "too_large"),
    ("PROMPT is 9001 tokens long; blip_caption takes at most 482", "too_large"),
    ("IMAGE has 300 text lines, over the limit of 256 per page (split the page)", "too_large"),
    ("TEXT is empty", "empty"), ("TEXT is blank", "empty"),
    ("IMAGE is not a decodable image (12 bytes, starts b'not')", "undecodable"),
    ("TEXT is not valid UTF-8 (invalid start byte at byte 0)", "bad_text"),
    ("PROMPT has 2 values but IMAGE has 1", "shape"),
    ("something new", "other"),
])
def test_rejection_reasons(message, reason):
    assert rejection_reason(message) == reason


def test_new_tokens_are_counted_without_the_prompt_and_padding():
    # BLIP drops its prompt's trailing [SEP] (3): the shared prefix is what counts
    assert count_new_tokens([[211, 5, 196, 9, 8, 3, 0, 0]], [[211, 5, 196, 3]], pad_token_id=0) == 3
    # encoder-decoder: the start token (0, also the pad) is the prompt
    assert count_new_tokens([[0, 7, 7, 1], [0, 4, 1, 0]], [[0], [0]], pad_token_id=0) == 5
    assert count_new_tokens([[5, 6]], [[5, 6]], pad_token_id=None) == 0


class FakeMetricFamily:
    """Records values per (family, labels), as Triton would export them."""

    COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
    exported: dict = {}

    def __init__(self, name, description, kind):
        self.name, self.kind = name, kind

    def Metric(self, labels, buckets=None):  # noqa: N802 (pb_utils' name)
        assert (buckets is not None) == (self.kind == self.HISTOGRAM)
        key = (self.name, tuple(sorted(labels.items())))
        family = self

        class Metric:
            def increment(self, value):
                assert family.kind == family.COUNTER
                FakeMetricFamily.exported[key] = FakeMetricFamily.exported.get(key, 0) + value

            def observe(self, value):
                assert family.kind == family.HISTOGRAM
                FakeMetricFamily.exported.setdefault(key, []).append(value)

        FakeMetricFamily.exported.setdefault(key, [] if buckets is not None else 0)
        return Metric()


def adapter(runner_class, weights_dir, with_metrics=True):
    pb = fake_pb_utils()
    if with_metrics:
        pb.MetricFamily = FakeMetricFamily

    class Model(TritonModel):
        pass

    Model.runner_class = runner_class
    model = Model()
    config = {"parameters": {"weights_root": {"string_value": str(weights_dir)},
                             "warmup": {"string_value": "false"}}}
    model.setup(pb, {"model_config": json.dumps(config), "model_instance_kind": "CPU"})
    return model


def test_the_adapter_reports_rejections_items_tokens_and_decode_time(weights_dir, seed_images):
    FakeMetricFamily.exported = {}
    model = adapter(BlipCaptioner, weights_dir)
    pb = model.pb
    try:
        responses = model.execute([request(pb, IMAGE=[seed_images["example1.jpg"]]),
                                   request(pb, IMAGE=[b"junk"]),
                                   request(pb, IMAGE=[seed_images["human1.png"], seed_images["example2.png"]])])
        assert [r.error is None for r in responses] == [True, False, True]
        exported = FakeMetricFamily.exported
        labels = (("model", "blip_caption"),)
        assert exported[(REJECTED, (("model", "blip_caption"), ("reason", "undecodable")))] == 1
        assert exported[(ITEMS, labels)] == [3]  # one execution carried three good items
        assert 0 < exported[(GENERATED, labels)] <= 3 * model.runner.settings.max_new_tokens
        (decode,) = exported[(DECODE, labels)]
        assert decode > 0
    finally:
        model.finalize()


def test_text_models_observe_no_decode_time_and_fakes_without_metrics_work(weights_dir):
    FakeMetricFamily.exported = {}
    model = adapter(T5Tagger, weights_dir)
    try:
        model.execute([request(model.pb, TEXT=[b"a dog on a beach"])])
        assert FakeMetricFamily.exported[(DECODE, (("model", "t5_tags"),))] == []
    finally:
        model.finalize()
    plain = adapter(T5Tagger, weights_dir, with_metrics=False)
    try:
        assert isinstance(plain.metrics, NoMetrics)
        assert plain.execute([request(plain.pb, TEXT=[b"a cat"])])[0].error is None
    finally:
        plain.finalize()


def test_internal_errors_are_counted_per_request(weights_dir, monkeypatch):
    FakeMetricFamily.exported = {}
    model = adapter(T5Tagger, weights_dir)
    try:
        def broken(items, confidence=False):
            raise RuntimeError("device lost")

        monkeypatch.setattr(model.runner, "infer", broken)
        pb = model.pb
        model.execute([request(pb, TEXT=[b"a dog"]), request(pb, TEXT=[b""]),
                       request(pb, TEXT=[b"a cat", b"a cow"])])
        assert FakeMetricFamily.exported[(INTERNAL, (("model", "t5_tags"),))] == 2
        assert FakeMetricFamily.exported[(REJECTED, (("model", "t5_tags"), ("reason", "empty")))] == 1
    finally:
        model.finalize()


def test_model_metrics_are_closed_before_their_families():
    metrics = ModelMetrics(type("pb", (), {"MetricFamily": FakeMetricFamily}), "t5_tags")
    metrics.close()
    assert metrics.families == {} and metrics._rejected == {}
