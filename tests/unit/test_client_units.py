"""Parts of the client that need no server: inputs, errors, results, drawing, CLI helpers."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from i2tt_client import Caption, Entity, Grounding, InvalidInputError, PageText, Tags, TextLine
from i2tt_client.cli.formats import read_rows, restore, row, text_block
from i2tt_client.cli.inference import confident_lines
from i2tt_client.cli.sources import expand_images
from i2tt_client.draw import draw_grounding
from i2tt_client.errors import (DeadlineExceededError, ServerError, UnavailableError,
                                from_triton)
from i2tt_client.inputs import image_bytes, is_batch
from i2tt_client.operations import parse_entities, parse_lines
from tritonclient.utils import InferenceServerException


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_arrays_and_pil_images_are_sent_as_lossless_png():
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), np.uint8)
    assert (decode(image_bytes(rgb)) == rgb).all()
    assert (decode(image_bytes(rgb.astype(np.float64) / 255)) == rgb).all()
    assert decode(image_bytes(rgb[:, :, :1])).shape == (5, 7)
    assert decode(image_bytes(Image.fromarray(rgb).convert("P"))).shape == (5, 7, 3)
    for bad in (np.zeros((2, 2, 5), np.uint8), np.full((2, 2), 2.0), np.zeros((0, 3, 3), np.uint8)):
        with pytest.raises(InvalidInputError):
            image_bytes(bad, 3)


def test_bad_inputs_name_their_index(tmp_path):
    with pytest.raises(InvalidInputError) as raised:
        image_bytes(tmp_path / "missing.png", 7)
    assert raised.value.index == 7 and "no such file" in raised.value.reason
    with pytest.raises(InvalidInputError):
        image_bytes(tmp_path, 0)
    with pytest.raises(InvalidInputError):
        image_bytes(3.5, 0)


def test_one_input_or_many():
    assert not is_batch("a.jpg") and not is_batch(b"..") and not is_batch(np.zeros((2, 2)))
    assert is_batch(["a.jpg"]) and is_batch(("a", "b")) and is_batch(iter([]))


def test_grpc_status_becomes_a_typed_error():
    def error(status):
        return from_triton(InferenceServerException("m", f"StatusCode.{status}"), index=2, model="x")

    assert isinstance(error("INVALID_ARGUMENT"), InvalidInputError)
    assert error("UNAVAILABLE").retryable and isinstance(error("RESOURCE_EXHAUSTED"), UnavailableError)
    assert isinstance(error("DEADLINE_EXCEEDED"), DeadlineExceededError)
    assert isinstance(error("INTERNAL"), ServerError) and not error("INTERNAL").retryable
    assert str(error("INTERNAL")) == "input 2: m"


def test_results_serialise_to_json():
    grounding = Grounding("a dog", parse_entities(
        '[{"phrase": "a dog", "span": [0, 5], "boxes": [[0.1, 0.2, 0.5, 0.9]]}]'), 0.75)
    assert grounding.entities == [Entity("a dog", (0, 5), [(0.1, 0.2, 0.5, 0.9)])]
    assert json.loads(grounding.to_json()) == {
        "caption": "a dog", "entities": [{"phrase": "a dog", "span": [0, 5],
                                          "boxes": [[0.1, 0.2, 0.5, 0.9]]}],
        "confidence": 0.75}
    assert grounding.entities[0].pixel_boxes(100, 10) == [(10, 2, 50, 9)]


def test_confidence_in_rows_text_and_csv():
    record = row("caption", "p.jpg", Caption("a dog", 0.25))
    assert record == {"input": "p.jpg", "caption": "a dog", "confidence": 0.25, "error": None}
    assert text_block("caption", record) == "p.jpg\n  caption: a dog\n  confidence: 0.250\n"
    assert restore({"input": "p.jpg", "caption": "a dog", "confidence": "0.25", "error": ""},
                   "caption", "csv") == record
    (line,) = parse_lines('[{"text": "hi", "box": [0, 0, 1, 0.5], "confidence": 0.5}]')
    page = row("ocr_page", "page.png", PageText("hi", [line]))
    assert text_block("ocr_page", page) == "page.png\n  - [0.000, 0.000, 1.000, 0.500] (0.500) hi\n"


def test_min_confidence_leaves_out_doubtful_lines_and_counts_them():
    box = (0.0, 0.0, 1.0, 0.1)
    page = PageText("sure\ndoubtful\nunknown", [TextLine("sure", box, 0.9),
                                                  TextLine("doubtful", box, 0.2),
                                                  TextLine("unknown", box)])
    kept, left_out = confident_lines(page, 0.5)
    assert left_out == 1
    assert kept == PageText("sure\nunknown", [page.lines[0], page.lines[2]])
    assert confident_lines(page, 0.0) == (page, 0)


def test_draw_keeps_the_size_and_marks_the_boxes():
    image = Image.new("RGB", (120, 80), "black")
    grounding = Grounding("a cat", [Entity("a cat", (0, 5), [(0.25, 0.5, 0.75, 0.95)])])
    drawn = np.asarray(draw_grounding(image, grounding))
    assert drawn.shape == (80, 120, 3)
    assert drawn[76, 60].any(), "the box's bottom edge is drawn"
    assert not drawn[10, 5].any() and not drawn[60, 60].any(), "outside and inside stay untouched"
    assert (np.asarray(draw_grounding(image, Grounding("x", []))) == 0).all()


def test_folders_expand_to_image_files_only(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/b.PNG", "d/e/a.jpg", "d/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    stdin = io.StringIO(f"{tmp_path / 'd' / 'e'}\n\nhttps://example.com/x.jpg\n")
    assert expand_images([str(tmp_path / "d"), "-"], stdin) == [
        str(tmp_path / "d" / "b.PNG"), str(tmp_path / "d" / "e" / "a.jpg"),
        str(tmp_path / "d" / "e" / "a.jpg"), "https://example.com/x.jpg"]


def test_resume_reads_interrupted_files(tmp_path):
    good = row("tags", "t", Tags(["a", "b"]))
    bad = row("tags", "u", InvalidInputError(1, "nope"))
    assert bad["error"] == "InvalidInputError: nope" and bad["tags"] is None
    cut = tmp_path / "rows.json"
    cut.write_text("[\n  " + json.dumps(good) + ",\n  " + json.dumps(bad))
    assert read_rows(cut, "json") == [good, bad]
    lines = tmp_path / "rows.jsonl"
    lines.write_text(json.dumps(good) + "\n" + '{"input": "cut sh')
    assert read_rows(lines, "jsonl") == [good]
    assert restore({"input": "t", "tags": "a; b", "error": ""}, "tags", "csv") == good


def test_api_key_travels_under_the_name_triton_checks_and_the_plain_name():
    from i2tt_client import I2TTClient

    with I2TTClient("127.0.0.1:1", api_key="k1", headers={"X-Trace": "t"}) as client:
        assert client.settings.headers == {"x-trace": "t", "i2tt-api-key": "k1",
                                           "triton-grpc-protocol-i2tt-api-key": "k1"}
    for bad in ("", " k", "k\n"):
        with pytest.raises(ValueError, match="api_key"):
            I2TTClient("127.0.0.1:1", api_key=bad)


def test_channel_options_keep_tritonclients_message_limits():
    from i2tt_client.settings import channel_options

    assert channel_options(None, None) is None  # tritonclient's own defaults
    options = dict(channel_options([("grpc.max_receive_message_length", 1024)], "round_robin"))
    assert options["grpc.lb_policy_name"] == "round_robin"
    assert options["grpc.max_receive_message_length"] == 1024, "the caller's value wins"
    assert options["grpc.max_send_message_length"] == 2**31 - 1


def test_restricted_protocol_refusals_are_authentication_errors():
    from i2tt_client import AuthenticationError

    error = from_triton(InferenceServerException(
        "This protocol is restricted, expecting header 'triton-grpc-protocol-i2tt-api-key'",
        status="StatusCode.UNAVAILABLE"))
    assert isinstance(error, AuthenticationError) and not error.retryable


def test_fetch_time_is_cut_to_what_is_left_of_the_call():
    from i2tt_client.inputs import FetchLimits

    limits = FetchLimits(timeout=10, max_bytes=5)
    assert limits.within(None) is limits and limits.within(30) is limits
    assert limits.within(2.5) == FetchLimits(timeout=2.5, max_bytes=5)


def test_a_pipe_is_refused_without_being_read(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.png")  # reading it would block for ever
    with pytest.raises(InvalidInputError, match="not a regular file"):
        image_bytes(tmp_path / "pipe.png", 0)


def test_a_request_expired_in_the_servers_queue_is_a_deadline_error():
    from tritonclient.utils import InferenceServerException

    from i2tt_client.errors import DeadlineExceededError, UnavailableError, from_triton

    expired = InferenceServerException("Request timeout expired", status="StatusCode.UNAVAILABLE")
    full = InferenceServerException("Exceeds maximum queue size", status="StatusCode.UNAVAILABLE")
    assert isinstance(from_triton(expired), DeadlineExceededError)
    assert not from_triton(expired).retryable
    assert isinstance(from_triton(full), UnavailableError) and from_triton(full).retryable


def test_a_crashed_or_reloading_model_is_retried_by_default_and_an_unknown_one_is_not():
    """Triton's own words while a model process is dead or its model reloads (measured on
    2.51): the request never ran, so the client sends it again whatever ``retries`` says."""
    from tritonclient.utils import InferenceServerException

    from i2tt_client.errors import ModelRestartingError, ServerError, from_triton

    dead = InferenceServerException("Stub process 'blip_caption_0_1' is not healthy.",
                                    status="StatusCode.INTERNAL")
    reloading = InferenceServerException(
        "Request for unknown model: 'blip_caption' has no available versions",
        status="StatusCode.NOT_FOUND")
    unknown = InferenceServerException("Request for unknown model: 'nope' is not found",
                                       status="StatusCode.NOT_FOUND")
    internal = InferenceServerException("inference failed: boom", status="StatusCode.INTERNAL")
    for error in (from_triton(dead), from_triton(reloading)):
        assert isinstance(error, ModelRestartingError) and error.retryable and error.heals
    assert type(from_triton(unknown)) is ServerError and type(from_triton(internal)) is ServerError


def test_the_wait_for_a_heal_starts_short_and_ends_with_the_deadline():
    from i2tt_client.deadlines import Deadline, Healing

    healing = Healing()
    pauses = [healing.delay() for _ in range(7)]
    assert pauses[0] <= 0.05 and 0.5 <= pauses[-1] <= 1.0
    assert healing.allows(Deadline.after(None)) and not healing.allows(Deadline.after(0.01))


def test_the_text_format_escapes_control_characters_so_each_row_stays_one_line():
    from i2tt_client.cli.formats import text_block

    record = {"input": "page.png", "error": None, "text": "a\x1cb\nc",
              "lines": [{"text": "a\x1cb", "box": [0, 0, 1, 0.5], "confidence": 0.5},
                        {"text": "c\u2028d\te", "box": [0, 0.5, 1, 1], "confidence": None}]}
    out = text_block("ocr_page", record)
    assert out.splitlines() == ["page.png", "  - [0.000, 0.000, 1.000, 0.500] (0.500) a\\x1cb",
                                "  - [0.000, 0.500, 1.000, 1.000] c\\u2028d\te"]
